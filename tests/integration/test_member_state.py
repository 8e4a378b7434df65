"""The member stage end to end: a v2-velocity champion (the v2 default: member history, codes
and specialty peers) served by ``bentoml serve``, the
worker as a real subprocess keeping member state in a changelog topic, and
``claimflow score-file`` deciding the same file offline. Every streamed decision must equal
the offline one (score to 1e-9, decision, reasons), with and without a kill -9 mid-stream:
the restarted worker restores its members from Kafka, not from local disk."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import ClaimV2, StreamSource
from tests.integration import worker_harness
from tests.integration.model_service_fixture import (
    CLAIMFLOW,
    Champion,
    ModelServiceProcess,
    clean_env,
)
from tests.integration.worker_harness import (
    Topics,
    Worker,
    assert_exactly_once,
    high_watermarks,
    produce,
    read_outcomes,
    wait_group_done,
    wait_until,
    worker_env,
)

workers = worker_harness.workers  # the fixture, registered in this module

pytestmark = pytest.mark.integration


def generate(path: Path, rows: int, seed: int) -> Path:
    subprocess.run([*CLAIMFLOW, "generate", "--profile", "realistic", "--rows", str(rows),
                    "--seed", str(seed), "--out", str(path), "-q"],
                   check=True, env=clean_env(), capture_output=True)
    return path


@pytest.fixture(scope="module")
def history_champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A model of the default v2 feature set (v2-velocity) trained by the trainer's functions,
    exported like ``promote``."""
    from modelstore.bento import export_to_bentoml
    from trainer.jsonl import load_jsonl
    from trainer.model import TrainParams, train

    home = tmp_path_factory.mktemp("history")
    trained = train(load_jsonl(generate(home / "train.jsonl", 8_000, seed=5)),
                    TrainParams(n_estimators=60, seed=5))
    assert trained.reference.feature_set == "v2-velocity"
    assert trained.reference.codes is not None
    tag = export_to_bentoml(trained.estimator, trained.reference, "1", "test-run-history",
                            home / "bentoml")
    return Champion(home=home, tag=tag, estimator=trained.estimator, feature_set="v2-velocity")


@pytest.fixture(scope="module")
def history_service(history_champion: Champion, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ModelServiceProcess]:
    service = ModelServiceProcess(history_champion,
                                  tmp_path_factory.mktemp("history-svc") / "service.log")
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ClaimV2]]:
    path = generate(tmp_path_factory.mktemp("stream") / "stream.jsonl", 3_000, seed=11)
    claims = []
    for line in path.read_bytes().splitlines():
        obj = orjson.loads(line)
        obj.pop("is_anomaly", None)
        obj.pop("pattern", None)
        claims.append(ClaimV2.from_json(orjson.dumps(obj)))
    return path, claims


@pytest.fixture(scope="module")
def offline(history_champion: Champion, stream_file: tuple[Path, list[ClaimV2]],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``claimflow score-file`` over the stream file, as a user runs it."""
    out = tmp_path_factory.mktemp("offline") / "scored.jsonl"
    result = subprocess.run(
        [*CLAIMFLOW, "score-file", "--data", str(stream_file[0]), "--out", str(out),
         "--model", history_champion.tag],
        env=clean_env(CLAIMFLOW_HOME=str(history_champion.home)), capture_output=True,
        text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "scored 3,000 claims" in result.stdout
    answers = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return {answer["claim_id"]: answer for answer in answers}


def test_score_file_answers_every_claim_with_history_and_reasons(
    offline: dict[str, dict[str, Any]], stream_file: tuple[Path, list[ClaimV2]],
) -> None:
    _, claims = stream_file
    assert list(offline) == [claim.claim_id for claim in claims]
    flagged = [a for a in offline.values() if a["decision"] == "investigate"]
    assert flagged
    assert all(a["reasons"] for a in flagged), "every investigate decision has a reason"
    rules = [a for a in flagged if a["reasons"][0]["kind"] == "rule"]
    assert rules, "the realistic profile resubmits claims: the rule must find some"
    assert all("same provider, date and services as claim" in a["reasons"][0]["message"]
               for a in rules)
    assert any("member filed" in r["message"] for a in flagged for r in a["reasons"])


def decided(bootstrap: str, topics: Topics) -> int:
    """Decisions committed so far (both outcome topics)."""
    return sum(sum(high_watermarks(bootstrap, topic).values())
               for topic in (topics.approved, topics.investigate))


def produce_by_member(bootstrap: str, topic: str, claims: list[ClaimV2]) -> None:
    produce(bootstrap, topic, [(c.member_id.encode(), c.to_json()) for c in claims])


def assert_same_as_offline(outcomes: Any, offline: dict[str, dict[str, Any]],
                           claims: list[ClaimV2]) -> None:
    assert_exactly_once(outcomes, claims)
    for claim in claims:
        [decision] = outcomes.decisions[claim.claim_id]
        answer = offline[claim.claim_id]
        assert isinstance(decision.source, StreamSource)
        assert abs(decision.anomaly_score - answer["anomaly_score"]) <= 1e-9, claim.claim_id
        assert decision.decision == answer["decision"], claim.claim_id
        assert [r.message for r in decision.reasons] == [r["message"]
                                                          for r in answer["reasons"]]


def test_streamed_decisions_equal_score_file_across_partitions(
    kafka_bootstrap: str, make_topic: Callable[..., str], group_id: str,
    history_service: ModelServiceProcess, offline: dict[str, dict[str, Any]],
    stream_file: tuple[Path, list[ClaimV2]], workers: Callable[..., Worker],
) -> None:
    topics = Topics(claims=make_topic(3), approved=make_topic(1), investigate=make_topic(1),
                    deadletter=make_topic(1))
    _, claims = stream_file
    produce_by_member(kafka_bootstrap, topics.claims, claims)
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id,
                                          history_service.url, SCORER_BATCH_MAX_SIZE="200"))
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=120)
    assert_same_as_offline(read_outcomes(kafka_bootstrap, topics), offline, claims)
    changelog = f"{group_id}.member-state"
    assert len(high_watermarks(kafka_bootstrap, changelog)) == 3
    assert worker.terminate() == 0


def kill_mid_stream_and_replace(bootstrap: str, make_topic: Callable[..., str], group_id: str,
                                model_url: str, claims: list[ClaimV2],
                                workers: Callable[..., Worker], restore_s: float,
                                done_s: float, **settings: str) -> tuple[Topics, Worker]:
    """Stream ``claims`` over 2 partitions to one worker, SIGKILL it a tenth of the way in,
    start a replacement with the same settings (same transactional.id, which fences the
    dead one) and wait until it restored its members (within ``restore_s``) and the group
    read everything (within ``done_s``). Small batches: hundreds of transactions, so the kill lands
    mid-stream."""
    topics = Topics(claims=make_topic(2), approved=make_topic(1), investigate=make_topic(1),
                    deadletter=make_topic(1))
    produce_by_member(bootstrap, topics.claims, claims)
    env = worker_env(bootstrap, topics, group_id, model_url, SCORER_BATCH_MAX_SIZE="10",
                     **settings)

    def outputs() -> int:
        return decided(bootstrap, topics)

    first = workers("first", env)
    wait_until(lambda: outputs() >= len(claims) // 10, 90, "a tenth of the decisions")
    first.kill9()
    assert outputs() < len(claims), "the worker finished before it could be killed"
    second = workers("second", env)
    second.wait_log(r"restored \S+ partitions 0,1: [1-9]\d* members", restore_s)
    wait_group_done(bootstrap, group_id, topics.claims, timeout_s=done_s)
    return topics, second


def test_kill_9_mid_stream_restores_member_state_from_kafka(
    kafka_bootstrap: str, make_topic: Callable[..., str], group_id: str,
    history_service: ModelServiceProcess, offline: dict[str, dict[str, Any]],
    stream_file: tuple[Path, list[ClaimV2]], workers: Callable[..., Worker],
) -> None:
    _, claims = stream_file
    topics, second = kill_mid_stream_and_replace(
        kafka_bootstrap, make_topic, group_id, history_service.url, claims, workers, 60, 120)
    assert_same_as_offline(read_outcomes(kafka_bootstrap, topics), offline, claims)
    assert second.terminate() == 0


def test_a_rebalance_mid_stream_moves_member_state_with_its_partitions(
    kafka_bootstrap: str, make_topic: Callable[..., str], group_id: str,
    history_service: ModelServiceProcess, offline: dict[str, dict[str, Any]],
    stream_file: tuple[Path, list[ClaimV2]], workers: Callable[..., Worker],
) -> None:
    topics = Topics(claims=make_topic(4), approved=make_topic(1), investigate=make_topic(1),
                    deadletter=make_topic(1))
    _, claims = stream_file
    produce_by_member(kafka_bootstrap, topics.claims, claims)
    # Batches of 5: the stream outlasts the second worker's start and group join.
    env = worker_env(kafka_bootstrap, topics, group_id, history_service.url,
                     SCORER_BATCH_MAX_SIZE="5")

    def outputs() -> int:
        return decided(kafka_bootstrap, topics)

    first = workers("first", env)
    wait_until(lambda: outputs() >= len(claims) // 10, 90, "a tenth of the decisions")
    second = workers("second", env, "--first-instance", "1")  # joins: partitions move
    second.wait_log(r"restored \S+ partitions \d", 60)
    assert outputs() < len(claims), "the stream ended before the rebalance"
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=120)
    assert_same_as_offline(read_outcomes(kafka_bootstrap, topics), offline, claims)
    assert "revoked" in first.log()
    assert first.terminate() == 0
    assert second.terminate() == 0


def test_a_static_member_restarted_after_kill_9_takes_over_without_waiting_for_its_session(
    kafka_bootstrap: str, make_topic: Callable[..., str], group_id: str,
    history_service: ModelServiceProcess, offline: dict[str, dict[str, Any]],
    stream_file: tuple[Path, list[ClaimV2]], workers: Callable[..., Worker],
) -> None:
    """SCORER_STATIC_MEMBERSHIP: the replacement joins under the dead worker's
    group.instance.id, so the coordinator hands it the partitions at once. The session
    timeout is two minutes here and the whole takeover must finish well inside it: a dynamic
    member would wait out those two minutes before the group let go of the dead one."""
    _, claims = stream_file
    session_s = 120
    topics, second = kill_mid_stream_and_replace(
        kafka_bootstrap, make_topic, group_id, history_service.url, claims, workers,
        session_s / 2, session_s / 2, SCORER_STATIC_MEMBERSHIP="true",
        SCORER_SESSION_TIMEOUT_MS=str(session_s * 1000),
        SCORER_TRANSACTION_TIMEOUT_MS=str(session_s * 1000))
    assert_same_as_offline(read_outcomes(kafka_bootstrap, topics), offline, claims)
    assert second.terminate() == 0
