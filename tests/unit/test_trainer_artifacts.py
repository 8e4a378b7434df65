from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from features.reference import FeatureReference
from trainer import artifacts
from trainer.data import Dataset
from trainer.model import TrainedModel, TrainParams, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def dataset(labelled: bool) -> Dataset:
    rng = np.random.default_rng(3)
    rows = 600
    x = np.column_stack([rng.lognormal(7, 0.4, rows), rng.integers(1, 10, rows),
                         rng.integers(0, 90, rows), rng.integers(1, 40, rows),
                         rng.integers(0, 365, rows)]).astype(float)
    patterns = np.array([""] * rows, dtype=object)
    patterns[:20] = "upcoding"
    x[:20, 0] *= 8
    return Dataset(features=x, labels=(patterns != "") if labelled else None,
                   patterns=patterns if labelled else None, sha256="0" * 64,
                   rows_read=rows, rows_dropped=0)


@pytest.fixture(scope="module")
def labelled() -> TrainedModel:
    return train(dataset(labelled=True), TrainParams(n_estimators=20))


def test_writes_every_artifact(labelled: TrainedModel, tmp_path: Path) -> None:
    written = {p.name for p in artifacts.write_all(labelled, tmp_path)}
    assert written == {"reference.json", "metrics.json", "score_histogram.png", "pr_curve.png",
                       "per_pattern.csv", "per_pattern.json"}
    for name in ("score_histogram.png", "pr_curve.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    reference = FeatureReference.model_validate_json((tmp_path / "reference.json").read_text())
    assert reference == labelled.reference
    assert json.loads((tmp_path / "metrics.json").read_text()) == labelled.metrics
    with (tmp_path / "per_pattern.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["pattern"] for row in rows] == ["(normal)", "upcoding"]
    assert json.loads((tmp_path / "per_pattern.json").read_text())[1]["pattern"] == "upcoding"


def test_unlabelled_data_has_no_pr_curve_or_pattern_table(tmp_path: Path) -> None:
    model = train(dataset(labelled=False), TrainParams(n_estimators=20))
    written = {p.name for p in artifacts.write_all(model, tmp_path)}
    assert written == {"reference.json", "metrics.json", "score_histogram.png"}
