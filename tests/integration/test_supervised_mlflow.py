"""The supervised family end to end against a real MLflow store (SQLite + artifact folder),
a real BentoML store and, for ``--labels-topic``, a real broker: train --supervised, the
champion judged on the same holdout, the gate, --force, --rollback, serving the classifier."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from mlflow import MlflowClient

from claimflow.cli import cli
from modelstore.registry import aliases_of
from schemas import ModelRef
from schemas.label import AnsweredDecision, Label
from scorer.model import RegistrySource, load_served_model
from scorer.model_settings import ModelSettings
from scorer.score_file import read_claims, score_claims
from tests.integration.cli_run import invoke, train_json

pytestmark = pytest.mark.integration

NAME = "claim-anomaly"
ROWS = 3_000


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Realistic v2 claims with is_anomaly/pattern, by the real `claimflow generate`."""
    path = tmp_path_factory.mktemp("data") / "realistic.jsonl"
    result = CliRunner().invoke(cli, ["generate", "--profile", "realistic", "--rows", str(ROWS),
                                      "--seed", "11", "-q", "--out", str(path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


def test_supervised_training_judges_itself_and_the_champion_on_one_holdout(
        home: Path, labelled: Path, client: MlflowClient) -> None:
    forest = train_json("--data", str(labelled), "--promote", "--n-estimators", "20")
    outcome = train_json("--data", str(labelled), "--supervised")
    assert outcome["version"] == "2"
    assert outcome["family"] == "gradient-boosting"
    assert aliases_of(client, NAME) == {"champion": "1", "challenger": "2"}
    metrics = outcome["metrics"]
    assert metrics["labels_used"] == ROWS * 0.8
    assert outcome["compared_with_champion"] == "1"
    # The champion, scored through score_claims (the stream's history) over the same file,
    # reproduces what its own training run measured on this holdout: same claims, same
    # history, same ranking.
    for key in ("pr_auc", "precision_at_budget", "recall_at_budget"):
        assert metrics[f"champion_{key}"] == pytest.approx(forest["metrics"][key], abs=1e-12)
    assert "champion_recall_at_budget_duplicate" in metrics
    assert "recall_at_budget_upcoding" in metrics
    for n in (100, 1000):
        assert 0.0 <= metrics[f"curve_pr_auc_{n}"] <= 1.0
        assert 0.0 <= metrics[f"curve_precision_at_budget_{n}"] <= 1.0
    assert "curve_pr_auc_10000" not in metrics  # only 2,400 training labels
    run = client.get_run(outcome["run_id"])
    assert run.data.params["champion_version"] == "1"
    assert run.data.params["labels_source"] == "file:is_anomaly"
    assert run.data.tags["claimflow.family"] == "gradient-boosting"
    artifacts = {a.path for a in client.list_artifacts(outcome["run_id"])}
    assert {"learning_curve.png", "learning_curve.json", "reference.json",
            "metrics.json"} <= artifacts
    assert client.get_model_version(NAME, "2").run_id == outcome["run_id"]
    steps = client.get_metric_history(outcome["run_id"], "learning_curve_pr_auc")
    assert sorted(m.step for m in steps) == [100, 1000]


def test_the_gate_refuses_a_worse_candidate_force_overrides_rollback_restores(
        home: Path, labelled: Path, client: MlflowClient) -> None:
    train_json("--data", str(labelled), "--promote", "--n-estimators", "20")
    supervised = train_json("--data", str(labelled), "--supervised")
    assert (supervised["metrics"]["precision_at_budget"]
            > supervised["metrics"]["champion_precision_at_budget"]), \
        "this test needs the classifier to beat the forest on this file"
    passed = invoke("promote")
    assert passed.exit_code == 0, passed.output
    assert "gate: passed: better: precision_at_budget" in passed.output
    assert aliases_of(client, NAME) == {"champion": "2", "challenger": "2",
                                        "previous-champion": "1"}

    train_json("--data", str(labelled), "--n-estimators", "20")  # v3: a forest again
    refused = invoke("promote")
    assert refused.exit_code == 1
    assert "version 3 is not promoted: worse: precision_at_budget" in refused.output
    assert "--force" in refused.output
    assert aliases_of(client, NAME)["champion"] == "2"

    forced = invoke("promote", "--force")
    assert forced.exit_code == 0, forced.output
    assert "FORCED" in forced.output
    assert aliases_of(client, NAME) == {"champion": "3", "challenger": "3",
                                        "previous-champion": "2"}
    tags = client.get_model_version(NAME, "3").tags
    assert tags["claimflow.forced"] == "true"
    assert tags["claimflow.previous_champion"] == "2"
    assert tags["claimflow.gate"] == "forced past a refusal"
    assert float(tags["claimflow.champion_precision_at_budget"]) == pytest.approx(
        supervised["metrics"]["precision_at_budget"], abs=1e-6)

    back = invoke("promote", "--rollback")
    assert back.exit_code == 0, back.output
    assert aliases_of(client, NAME) == {"champion": "2", "challenger": "3",
                                        "previous-champion": "3"}
    experiment = client.get_experiment_by_name(f"{NAME}-promotions")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert [r.data.params["action"] for r in runs] == ["promote", "promote", "promote",
                                                      "rollback"]


def test_the_served_classifier_scores_from_its_export_with_reasons(
        home: Path, labelled: Path, tmp_path: Path) -> None:
    outcome = train_json("--data", str(labelled), "--supervised", "--promote")
    settings = ModelSettings()
    served = load_served_model(RegistrySource(settings.tracking_uri, NAME, "champion").wanted(),
                               settings.bentoml_home, settings)
    assert served.family == "gradient-boosting"
    assert served.ref == ModelRef(name=NAME, version="1", run_id=outcome["run_id"])
    assert served.threshold == outcome["metrics"]["threshold"]
    with labelled.open("rb") as handle:
        answers = list(score_claims(served, read_claims(handle, str(labelled))))
    flagged = [a for a in answers if a["decision"] == "investigate"]
    assert 0.02 * ROWS < len(flagged) < 0.12 * ROWS
    assert all(a["reasons"] for a in flagged)
    assert any("x the median for code" in r["message"] or "claims within" in r["message"]
               for a in flagged for r in a["reasons"])
    out = tmp_path / "scored.jsonl"
    result = invoke("score-file", "--data", str(labelled), "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["anomaly_score"] for line in lines] == [a["anomaly_score"] for a in answers]


def test_labels_from_the_topic_train_on_the_labelled_claims_only(
        home: Path, labelled: Path, client: MlflowClient, kafka_bootstrap: str,
        make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    topic = make_topic(partitions=2, prefix="labels")
    when = datetime(2026, 12, 1, tzinfo=UTC)
    answered = AnsweredDecision(decision="investigate", model=ModelRef(name=NAME, version="1"),
                                anomaly_score=0.7, threshold=0.6, decided_at=when)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    rows = [orjson.loads(line) for line in labelled.read_bytes().splitlines()]
    sent = 0
    for i, row in enumerate(rows):
        if i % 3:  # a third of the claims got a disposition
            continue
        disposition = "fraud" if row["is_anomaly"] else "legitimate"
        if i % 5 == 0:  # first needs_info, later the answer: the latest wins
            early = Label(claim_id=row["claim_id"], disposition="needs_info",
                          investigator="alice", decided_at=when, answers=answered)
            producer.produce(topic, key=row["claim_id"].encode(), value=early.to_json())
        label = Label(claim_id=row["claim_id"], disposition=disposition,  # type: ignore[arg-type]
                      investigator="alice", decided_at=when, answers=answered)
        producer.produce(topic, key=row["claim_id"].encode(), value=label.to_json())
        sent += 1
    # A tombstone withdraws the first claim's label (it stays history).
    producer.produce(topic, key=rows[0]["claim_id"].encode(), value=None)
    assert producer.flush(30) == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    outcome = train_json("--data", str(labelled), "--supervised", "--labels-topic", topic)
    train_part = len([i for i in range(int(ROWS * 0.8)) if i % 3 == 0]) - 1
    sent -= 1
    assert outcome["labels_used"] == train_part
    assert outcome["metrics"]["holdout_claims"] == sent - train_part
    params = client.get_run(outcome["run_id"]).data.params
    assert params["labels_source"] == f"topic:{topic}"
    assert params["labels_on_topic"] == str(sent)
