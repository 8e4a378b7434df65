"""The supervised family end to end against a real MLflow store (SQLite + artifact folder),
a real BentoML store and, for ``--labels-topic``, a real broker: train --supervised, the
champion judged on the same holdout, the gate, --force, --rollback, serving the classifier."""

from __future__ import annotations

import time
import uuid
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
from schemas import ModelRef, ScoreResult, ShadowScore, StreamSource
from schemas.label import AnsweredDecision, Label
from schemas.shadow import ShadowVerdict
from scorer.client import ModelClient
from scorer.member_state import MemberStore, member_step
from scorer.model_settings import ModelSettings
from scorer.routing import Position
from scoring.model import RegistrySource, load_served_model
from scoring.score_file import read_claims, score_claims
from tests.integration.cli_run import invoke, train_json
from tests.integration.model_service_fixture import Champion, ModelServiceProcess, clean_env

pytestmark = pytest.mark.integration

NAME = "claim-anomaly"
ROWS = 3_000


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Realistic v2 claims with is_anomaly/pattern, by the real `claimflow generate`."""
    path = tmp_path_factory.mktemp("data") / "realistic.jsonl"
    result = CliRunner().invoke(cli, ["generate", "--profile", "realistic", "--rows", str(ROWS),
                                      "--seed", "12", "-q", "--out", str(path)],
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
    # Exported as well, so the model service shadows the challenger as it is.
    settings = ModelSettings()
    shadow = load_served_model(
        RegistrySource(settings.tracking_uri, NAME, "challenger").wanted(),
        settings.bentoml_home, settings)
    assert shadow.ref == ModelRef(name=NAME, version="2", run_id=outcome["run_id"])
    assert shadow.family == "gradient-boosting"


def test_the_gate_refuses_a_worse_candidate_force_overrides_rollback_restores(
        home: Path, labelled: Path, client: MlflowClient) -> None:
    train_json("--data", str(labelled), "--promote", "--n-estimators", "20")
    supervised = train_json("--data", str(labelled), "--supervised")
    assert (supervised["metrics"]["precision_at_budget"]
            > supervised["metrics"]["champion_precision_at_budget"]), \
        "this test needs the classifier to beat the forest on this file"
    passed = invoke("promote")
    assert passed.exit_code == 0, passed.output
    assert "gate: passed: holdout: better: precision_at_budget" in passed.output
    assert aliases_of(client, NAME) == {"champion": "2", "challenger": "2",
                                        "previous-champion": "1"}

    train_json("--data", str(labelled), "--n-estimators", "20")  # v3: a forest again
    refused = invoke("promote")
    assert refused.exit_code == 1
    assert "version 3 is not promoted: holdout: worse: precision_at_budget" in refused.output
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


def shadow_record(claim_id: str, champion_investigates: bool, challenger_investigates: bool,
                  challenger_version: str, offset: int) -> bytes:
    def verdict(version: str, investigate: bool) -> ShadowVerdict:
        return ShadowVerdict(model=ModelRef(name=NAME, version=version), anomaly_score=0.5,
                             threshold=0.4, decision="investigate" if investigate else "approve")
    return ShadowScore(
        claim_id=claim_id, champion=verdict("1", champion_investigates),
        challenger=verdict(challenger_version, challenger_investigates),
        agree=champion_investigates == challenger_investigates,
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
        source=StreamSource(topic="claims", partition=0, offset=offset)).to_json()


def write_shadow_period(bootstrap: str, shadow_topic: str, labels_topic: str,
                        worse: str = "2", better: str = "3") -> None:
    """Champion v1 flagged S-0..S-39 (S-0..S-29 fraud, S-30..S-39 legitimate), S-40..S-99
    approved. Candidate ``worse`` flagged S-10..S-39 (precision 20/30, worse than 30/40);
    candidate ``better`` flagged S-0..S-24 (25/25). Written in transactions like the
    stream's, with an aborted one that would make ``worse`` look perfect if it were read."""
    producer = Producer({"bootstrap.servers": bootstrap,
                         "transactional.id": f"shadow-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(100):
        for version, flagged in ((worse, 10 <= i < 40), (better, i < 25)):
            producer.produce(shadow_topic, key=f"S-{i}-{version}".encode(),
                             value=shadow_record(f"S-{i}", i < 40, flagged, version, i))
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(100, 160):
        producer.produce(shadow_topic, key=f"S-{i}".encode(),
                         value=shadow_record(f"S-{i}", True, True, worse, i))
    # Written before the abort, so the reader really meets aborted records; aborting while
    # the partitions are still being added to the transaction is a fatal INVALID_TXN_STATE.
    assert producer.flush(30) == 0
    producer.abort_transaction(30)
    labels = Producer({"bootstrap.servers": bootstrap})
    when = datetime(2026, 12, 2, tzinfo=UTC)
    answered = AnsweredDecision(decision="investigate", model=ModelRef(name=NAME, version="1"),
                                anomaly_score=0.7, threshold=0.6, decided_at=when)
    for i in range(160):
        disposition = "fraud" if i < 30 or i >= 100 else "legitimate"
        if i < 40 or i >= 100:
            label = Label(claim_id=f"S-{i}", disposition=disposition,  # type: ignore[arg-type]
                          investigator="ana", decided_at=when, answers=answered)
            labels.produce(labels_topic, key=f"S-{i}".encode(), value=label.to_json())
    assert labels.flush(30) == 0


def test_the_gate_reads_the_shadow_period_and_strict_wants_evidence(
        home: Path, labelled: Path, client: MlflowClient, kafka_bootstrap: str,
        make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    shadow_topic, labels_topic = make_topic(2, "shadow"), make_topic(2, "labels")
    write_shadow_period(kafka_bootstrap, shadow_topic, labels_topic)
    for key, value in {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                       "TRAINER_PROMOTE_SHADOW_TOPIC": shadow_topic,
                       "TRAINER_PROMOTE_LABELS_TOPIC": labels_topic}.items():
        monkeypatch.setenv(key, value)
    train_json("--data", str(labelled), "--promote", "--n-estimators", "20")
    # Other split seeds: no holdout compares v2 or v3 with v1; only the shadow period does.
    train_json("--data", str(labelled), "--n-estimators", "20", "--seed", "5")
    train_json("--data", str(labelled), "--n-estimators", "20", "--seed", "6")

    worse = invoke("promote", "--version", "2")
    assert worse.exit_code == 1
    assert ("shadow: worse: shadow precision 0.6667 (30 labelled) vs champion v1's 0.7500 "
            "(40), agreement 0.9000 on 100 claims") in worse.output
    assert aliases_of(client, NAME)["champion"] == "1"

    strict = invoke("promote", "--version", "2", "--strict", "--no-shadow-period")
    assert strict.exit_code == 1
    assert "strict: no comparable evidence" in strict.output
    assert aliases_of(client, NAME)["champion"] == "1"

    better = invoke("promote", "--version", "3", "--strict")
    assert better.exit_code == 0, better.output
    assert "shadow: not worse: shadow precision 1.0000 (25 labelled)" in better.output
    assert aliases_of(client, NAME)["champion"] == "3"
    tags = client.get_model_version(NAME, "3").tags
    assert tags["claimflow.gate"] == "passed"
    experiment = client.get_experiment_by_name(f"{NAME}-promotions")
    assert experiment is not None
    last = client.search_runs([experiment.experiment_id],
                              order_by=["attributes.start_time DESC"])[0]
    assert last.data.metrics["shadow_challenger_precision"] == 1.0
    assert last.data.metrics["shadow_champion_precision"] == 0.75
    assert last.data.metrics["shadow_agreement"] == pytest.approx(0.85)
    assert last.data.metrics["shadow_claims"] == 100


def test_serve_model_answers_with_the_classifier_champion_over_http(
        home: Path, labelled: Path, tmp_path: Path) -> None:
    """A real BentoML server (`claimflow serve-model`) resolving the registry's champion, a
    supervised one: /score_batch answers its probabilities, its stored threshold and worded
    reasons, equal to the same model scored offline."""
    outcome = train_json("--data", str(labelled), "--supervised", "--promote")
    with labelled.open("rb") as handle:
        claims = list(read_claims(handle, str(labelled)))[:600]
    settings = ModelSettings()
    offline = load_served_model(RegistrySource(settings.tracking_uri, NAME, "champion").wanted(),
                                settings.bentoml_home, settings)
    expected = list(score_claims(offline, claims, batch=len(claims)))
    step = member_step(MemberStore(), claims, [Position("file", 0, 0)] * len(claims))
    service = RegistryModelService(home, tmp_path / "model.log")
    service.start()
    try:
        with ModelClient(service.url, timeout_s=60) as model_client:
            answers = model_client.score_batch(claims, step.features)
    finally:
        service.stop()
    results = [a for a in answers if isinstance(a, ScoreResult)]
    assert len(results) == len(claims)
    assert {r.model.version for r in results} == {"1"}
    assert {r.model.run_id for r in results} == {outcome["run_id"]}
    assert {r.threshold for r in results} == {outcome["metrics"]["threshold"]}
    assert all(0.0 <= r.anomaly_score <= 1.0 for r in results)
    assert [r.anomaly_score for r in results] == pytest.approx(
        [e["anomaly_score"] for e in expected], abs=1e-12)
    assert [r.decision for r in results] == [e["decision"] for e in expected]
    flagged = [r for r in results if r.decision == "investigate"]
    assert flagged
    for result in flagged:
        assert result.reasons
        # Investigator's words, not "claims_7d 9 is above the 99th percentile".
        assert any(not reason.message.startswith(reason.feature) for reason in result.reasons)


class RegistryModelService(ModelServiceProcess):
    """`claimflow serve-model` resolving the registry's champion (no pinned tag)."""

    def __init__(self, home: Path, log_path: Path) -> None:
        super().__init__(Champion(home=home, tag="", estimator=None), log_path)

    def env(self) -> dict[str, str]:
        return clean_env(CLAIMFLOW_HOME=str(self.champion.home), MODEL_POLL_INTERVAL_S="0")


def test_the_learning_loop_trains_shadows_and_promotes_through_the_gate(
        home: Path, labelled: Path, client: MlflowClient, kafka_bootstrap: str,
        make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`claimflow learn` against a real broker and MLflow store: it waits for labels, trains
    the challenger from the claims topic and claims.labels, waits for the shadow period
    (written here as the stream would, once the challenger exists) and promotes it."""
    from concurrent.futures import ThreadPoolExecutor

    from claimflow.learning_loop import LearningLoop, LearnSettings

    claims_topic, labels_topic = make_topic(2, "claims"), make_topic(2, "labels")
    shadow_topic = make_topic(2, "shadow")
    for key, value in {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                       "TRAINER_PROMOTE_SHADOW_TOPIC": shadow_topic,
                       "TRAINER_PROMOTE_LABELS_TOPIC": labels_topic}.items():
        monkeypatch.setenv(key, value)
    train_json("--data", str(labelled), "--promote", "--n-estimators", "20")
    settings = LearnSettings(min_labels=ROWS // 2, poll_s=0.2, timeout_s=240,
                             claims_topic=claims_topic, labels_topic=labels_topic)
    lines: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(LearningLoop(settings, lines.append).run)
        # The stream's claims (ground truth stays out of the value, as in the stream) ...
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        rows = [orjson.loads(line) for line in labelled.read_bytes().splitlines()]
        for row in rows:
            truth = {k: row.pop(k) for k in ("is_anomaly", "pattern")}
            row["_truth"] = truth["is_anomaly"]
            body = orjson.dumps({k: v for k, v in row.items() if k != "_truth"})
            producer.produce(claims_topic, key=row["member_id"].encode(), value=body)
        assert producer.flush(30) == 0
        # ... and investigators' answers.
        when = datetime(2026, 12, 1, tzinfo=UTC)
        answered = AnsweredDecision(decision="investigate",
                                    model=ModelRef(name=NAME, version="1"),
                                    anomaly_score=0.7, threshold=0.6, decided_at=when)
        for row in rows:
            label = Label(claim_id=row["claim_id"], investigator="sim", decided_at=when,
                          disposition="fraud" if row["_truth"] else "legitimate",
                          answers=answered)
            producer.produce(labels_topic, key=row["claim_id"].encode(), value=label.to_json())
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 240
        while aliases_of(client, NAME).get("challenger") != "2":
            assert not running.done(), running.result()
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)  # polling interval, bounded by the deadline
        assert aliases_of(client, NAME)["champion"] == "1"
        write_shadow_period(kafka_bootstrap, shadow_topic, labels_topic, worse="9", better="2")
        result = running.result(timeout=240)
    assert result.promoted, (result.message, lines)
    assert result.challenger == "2"
    assert aliases_of(client, NAME)["champion"] == "2"
    text = "\n".join(lines)
    for step in ("wait for labels", f"read {ROWS:,} claims from {claims_topic}",
                 "training the supervised challenger", "challenger: claim-anomaly version 2",
                 "wait for the shadow period", "promoting version 2 through the gate",
                 "version 2 is the champion now"):
        assert step in text, text
    assert "shadow: not worse: shadow precision 1.0000 (25 labelled)" in text
