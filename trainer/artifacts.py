"""Run artifacts written to a folder: plots (PNG), the per-pattern table, the reference.

Plots use matplotlib's object API with the Agg canvas: no pyplot global state, no GUI
backend, safe in any thread or headless process.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Final

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from modelstore.registry import REFERENCE_ARTIFACT
from trainer.evaluate import PatternRow
from trainer.model import TrainedModel, amount_column

SCORE_HISTOGRAM: Final = "score_histogram.png"
PR_CURVE: Final = "pr_curve.png"
PATTERN_CSV: Final = "per_pattern.csv"
PATTERN_JSON: Final = "per_pattern.json"
METRICS_JSON: Final = "metrics.json"


def write_all(model: TrainedModel, folder: Path) -> list[Path]:
    """Write every artifact of ``model`` into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        write_reference(model, folder / REFERENCE_ARTIFACT),
        write_json(model.metrics, folder / METRICS_JSON),
        plot_score_histogram(model, folder / SCORE_HISTOGRAM),
    ]
    if model.split.y_test is not None and model.split.y_test.any():
        written.append(plot_pr_curve(model, folder / PR_CURVE))
    if model.patterns:
        written.append(write_pattern_csv(model.patterns, folder / PATTERN_CSV))
        written.append(write_json([row.as_dict() for row in model.patterns],
                                  folder / PATTERN_JSON))
    return written


def write_reference(model: TrainedModel, path: Path) -> Path:
    path.write_text(model.reference.model_dump_json(indent=2), encoding="utf-8")
    return path


def write_json(data: object, path: Path) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    return path


def write_pattern_csv(rows: list[PatternRow], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].as_dict()))
        writer.writeheader()
        writer.writerows(row.as_dict() for row in rows)
    return path


def _save(figure: Figure, path: Path) -> Path:
    # Fixed margins: automatic layout engines cost seconds of text measuring per figure.
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.92)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)
    return path


def plot_score_histogram(model: TrainedModel, path: Path) -> Path:
    """Test-split anomaly scores (split by label when known) and the decision threshold."""
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    scores = model.test_scores
    # An explicit range keeps both classes on the same bins (numpy widens an empty range).
    span = (float(scores.min()), float(scores.max()))
    labels = model.split.y_test
    if labels is None:
        axes.hist(scores, bins=60, range=span, color="tab:blue", label="test claims")
    else:
        axes.hist(scores[~labels], bins=60, range=span, alpha=0.7, color="tab:blue", label="normal")
        axes.hist(scores[labels], bins=60, range=span, alpha=0.7, color="tab:red", label="anomaly")
    axes.axvline(model.threshold, color="black", linestyle="--",
                 label=f"threshold {model.threshold:.3f}")
    axes.set_yscale("log")
    axes.set_xlabel("anomaly score (higher = more unusual)")
    axes.set_ylabel("claims (log scale)")
    axes.set_title("Test-split anomaly scores")
    axes.legend()
    return _save(figure, path)


def plot_pr_curve(model: TrainedModel, path: Path) -> Path:
    """Precision-recall of the model's score vs ranking by amount alone."""
    labels = model.split.y_test
    assert labels is not None
    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    for name, score, color in (
        ("isolation forest", model.test_ranking, "tab:blue"),
        ("claim_amount alone", model.split.x_test[:, amount_column(model.feature_set)],
         "tab:gray"),
    ):
        precision, recall, _ = precision_recall_curve(labels, score)
        axes.step(recall, precision, where="post", color=color, label=name)
    if "naive_recall" in model.metrics:
        axes.plot([model.metrics["naive_recall"]], [model.metrics["naive_precision"]], "o",
                  color="tab:orange", label="naive rule (amount > train p98)")
    axes.axhline(float(labels.mean()), color="tab:red", linestyle=":", label="prevalence")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.01)
    axes.set_ylim(0, 1.01)
    axes.set_title("Precision-recall on the test split")
    axes.legend()
    return _save(figure, path)


LEARNING_CURVE: Final = "learning_curve.png"
LEARNING_CURVE_JSON: Final = "learning_curve.json"


def plot_learning_curve(points: list[dict[str, float]], full: dict[str, float],
                        champion: dict[str, float] | None, path: Path) -> Path:
    """Holdout PR-AUC and precision at budget against the number of training labels (log
    x axis; the last point is every label), with the champion's level when there is one."""
    everything = [*points, full]
    labels = [p["labels"] for p in everything]
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for key, color in (("pr_auc", "tab:blue"), ("precision_at_budget", "tab:green")):
        axes.plot(labels, [p[key] for p in everything], "o-", color=color,
                  label=f"classifier {key.replace('_', ' ')}")
        if champion is not None and key in champion:
            axes.axhline(champion[key], color=color, linestyle=":",
                         label=f"champion {key.replace('_', ' ')}")
    axes.set_xscale("log")
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("training labels")
    axes.set_ylabel("on the labelled holdout")
    axes.set_title("Learning curve")
    axes.legend(fontsize="small")
    return _save(figure, path)
