"""``claimflow score`` end to end: real broker, real ``bentoml serve`` model service, the
worker as a real subprocess (so it can be SIGKILLed). Every check reads the outcome topics
the way a downstream consumer does: read_committed, to the end of every partition."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import orjson
import pytest
from confluent_kafka import (
    KafkaError,
    KafkaException,
    Producer,
)

from schemas import Claim, StreamSource
from scorer.calls import fatal_cause
from scorer.recovery import TxnAction, classify_txn_error
from tests.integration import model_service_fixture, worker_harness
from tests.integration.model_service_fixture import (
    Champion,
    ModelServiceProcess,
    free_port,
)
from tests.integration.worker_harness import (
    Topics,
    Worker,
    assert_exactly_once,
    committed_offsets,
    high_watermarks,
    metric,
    produce,
    produce_claims,
    read_outcomes,
    realistic_claims,
    wait_group_done,
    wait_until,
    worker_env,
)
from tests.v2_factory import as_contract, v2_claim, v2_claims

pytestmark = pytest.mark.integration

# The shared real-model-service fixtures, registered in this module.
champion = model_service_fixture.champion
_model_service_session = model_service_fixture._model_service_session
model_service = model_service_fixture.model_service
v2_champion = model_service_fixture.v2_champion
_v2_model_service_session = model_service_fixture._v2_model_service_session
v2_model_service = model_service_fixture.v2_model_service
# The worker harness's fixtures, registered in this module.
topics = worker_harness.topics
workers = worker_harness.workers

def test_every_claim_is_decided_once_exactly_like_the_offline_model(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    champion: Champion, workers: Callable[..., Worker],
) -> None:
    claims = realistic_claims(3_000, seed=11)
    positions = produce_claims(kafka_bootstrap, topics.claims, claims)
    metrics_port = free_port()
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id, model_service.url,
                                          SCORER_METRICS_PORT=str(metrics_port)))

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    outcomes = read_outcomes(kafka_bootstrap, topics)

    assert_exactly_once(outcomes, claims)
    assert outcomes.dead_letters == []
    scores, verdicts = champion.offline(claims)
    for claim, score, verdict in zip(claims, scores, verdicts, strict=True):
        [decision] = outcomes.decisions[claim.claim_id]
        assert decision.claim == claim
        assert decision.decision == verdict
        assert abs(decision.anomaly_score - score) <= 1e-9
        assert decision.threshold == pytest.approx(-champion.estimator.offset_, abs=1e-12)
        assert decision.model.name == "claim-anomaly"
        assert decision.model.version == "1"
        expected_topic = topics.investigate if verdict == "investigate" else topics.approved
        assert outcomes.topic_of[claim.claim_id] == expected_topic
        assert decision.source.kind == "stream"
        assert (decision.source.topic, decision.source.partition, decision.source.offset) == (
            topics.claims, *positions[claim.claim_id])
    flagged = sum(1 for v in verdicts if v == "investigate")
    assert 0 < flagged < len(claims)
    assert any(outcomes.decisions[c.claim_id][0].reasons for c, v in zip(claims, verdicts,
                                                                         strict=True)
               if v == "investigate")

    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert metric(scraped, "claimflow_scorer_consumed_total") == len(claims)
    assert metric(scraped, "claimflow_scorer_investigated_total") == flagged
    assert metric(scraped, "claimflow_scorer_approved_total") == len(claims) - flagged
    assert metric(scraped, "claimflow_scorer_dead_lettered_total") == 0
    assert "claimflow_scorer_batch_latency_seconds_bucket" in scraped

    assert worker.terminate() == 0
    assert "stopped cleanly" in worker.log()


def test_v2_claims_keyed_by_member_are_decided_and_bad_or_foreign_ones_dead_lettered(
    kafka_bootstrap: str, topics: Topics, group_id: str,
    v2_model_service: ModelServiceProcess, v2_champion: Champion,
    workers: Callable[..., Worker],
) -> None:
    claims = as_contract(v2_claims(400, seed=21, anomaly_share=0.05))
    good = [(c.member_id.encode(), c.to_json()) for c in claims]  # the producer's v2 key
    line = {"procedure_code": "99213", "units": 1, "charge": 10.0}
    bad = [  # (value, field path in the dead letter's reason)
        (v2_claim(claim_id="B-sum", claim_amount=99.0), "claim_amount"),
        (v2_claim(claim_id="B-101", lines=[line] * 101), "lines"),
        (v2_claim(claim_id="B-code", lines=[{**line, "procedure_code": "9 9"}]),
         "lines.0.procedure_code"),
        (v2_claim(claim_id="B-date", service_date="11/20/2026"), "service_date"),
    ]
    v1_claim = realistic_claims(1, seed=5)[0]
    records: list[tuple[bytes | None, bytes | None]] = [
        *good, *[(b"M-bad", orjson.dumps(v)) for v, _ in bad],
        (v1_claim.claim_id.encode(), v1_claim.to_json())]
    positions = produce(kafka_bootstrap, topics.claims, records)
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id,
                                          v2_model_service.url))

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    outcomes = read_outcomes(kafka_bootstrap, topics)  # checks: decision key == claim_id

    assert_exactly_once(outcomes, claims)
    scores, verdicts = v2_champion.offline(claims)
    for claim, score, verdict, position in zip(claims, scores, verdicts, positions,
                                               strict=False):
        [decision] = outcomes.decisions[claim.claim_id]
        assert decision.claim == claim
        assert decision.claim.schema_version == 2
        assert decision.decision == verdict
        assert abs(decision.anomaly_score - score) <= 1e-9
        assert isinstance(decision.source, StreamSource)
        assert (decision.source.partition, decision.source.offset) == position
    assert "investigate" in verdicts
    letters = {json.loads(d.original_value)["claim_id"]: d for d in outcomes.dead_letters}
    assert set(letters) == {"B-sum", "B-101", "B-code", "B-date", v1_claim.claim_id}
    for value, path in bad:
        letter = letters[value["claim_id"]]
        assert letter.error_kind == "contract_violation"
        assert f"{path}:" in letter.error
        assert letter.original_key_b64 == base64.b64encode(b"M-bad").decode()
    foreign = letters[v1_claim.claim_id]
    assert foreign.error_kind == "unsupported_version"
    assert "schema_version 2; this claim is schema_version 1" in foreign.error
    assert foreign.original_value == v1_claim.to_json()
    assert worker.terminate() == 0


POISON: list[tuple[str, bytes | None, str]] = [
    # (label, value, dead-letter kind)
    ("not-json", b"hello, claims", "not_json"),
    ("binary-junk", bytes(range(256)) * 4, "not_json"),
    ("truncated", b'{"claim_id": "X-1", "claim_amount": 12', "not_json"),
    ("empty", b"", "empty"),
    ("null-value", None, "empty"),
    ("huge", b'{"claim_id": "' + b"A" * 40_000 + b'"}', "too_large"),
    ("json-array", b"[1, 2, 3]", "contract_violation"),
    ("json-number", b"42", "contract_violation"),
]


def poison_from_claim(claim: Claim) -> list[tuple[str, bytes | None, str]]:
    """Contract violations built from a real claim, one field broken at a time."""
    base = json.loads(claim.to_json())

    def broken(label: str, **change: object) -> tuple[str, bytes | None, str]:
        value = {**base, **change}
        for key, new in change.items():
            if new is ...:
                del value[key]
        return label, json.dumps(value).encode(), "contract_violation"

    return [
        broken("missing-field", claim_amount=...),
        broken("extra-field", is_anomaly=True),
        broken("amount-as-string", claim_amount="1200.50"),
        broken("negative-amount", claim_amount=-10.0),
        broken("zero-services", num_services=0),
        broken("age-151", patient_age=151),
        broken("wrong-schema-version", schema_version=3),
        broken("naive-timestamp", submitted_at="2026-01-01T10:00:00"),
        ("nan-amount", json.dumps(base).replace(
            json.dumps(base["claim_amount"]), "NaN", 1).encode(), "contract_violation"),
    ]


def test_malformed_messages_are_dead_lettered_with_reasons_and_good_ones_decided(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    workers: Callable[..., Worker],
) -> None:
    claims = realistic_claims(200, seed=12)
    poison = POISON + poison_from_claim(claims[0])
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, claim in enumerate(claims):  # interleave: bad messages between good claims
        records.append((claim.claim_id.encode(), claim.to_json()))
        if i < len(poison):
            records.append((f"bad-{poison[i][0]}".encode(), poison[i][1]))
    produce(kafka_bootstrap, topics.claims, records)
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id,
                                          model_service.url))

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    outcomes = read_outcomes(kafka_bootstrap, topics)

    assert_exactly_once(outcomes, claims)
    letters = {base64.b64decode(letter.original_key_b64 or "").decode(): letter
               for letter in outcomes.dead_letters}
    assert len(outcomes.dead_letters) == len(poison) == len(letters)
    for label, value, kind in poison:
        letter = letters[f"bad-{label}"]
        assert letter.error_kind == kind, (label, letter.error)
        kept = (value or b"")[:16_384]  # the default SCORER_MAX_CLAIM_BYTES
        assert letter.original_value == kept, label
        assert letter.error
        assert letter.source.topic == topics.claims
    assert "claim_amount" in letters["bad-missing-field"].error
    assert "is_anomaly" in letters["bad-extra-field"].error
    assert "patient_age" in letters["bad-age-151"].error
    assert "schema_version" in letters["bad-wrong-schema-version"].error
    assert "bytes exceeds 16384 bytes" in letters["bad-huge"].error
    assert "keeps the first 16384 bytes" in letters["bad-huge"].error
    log = worker.log()
    assert re.search(rf"{re.escape(topics.claims)}\[\d+\]@\d+ key=b'bad-not-json'", log)
    assert worker.terminate() == 0


def test_kill_9_mid_stream_then_restart_still_decides_every_claim_exactly_once(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    workers: Callable[..., Worker],
) -> None:
    claims = realistic_claims(20_000, seed=13)
    produce_claims(kafka_bootstrap, topics.claims, claims)
    # Small batches: many transactions, so the kill lands mid-stream and likely mid-commit.
    env = worker_env(kafka_bootstrap, topics, group_id, model_service.url,
                     SCORER_BATCH_MAX_SIZE="100")
    first = workers("first", env)

    def outputs() -> int:
        return sum(high_watermarks(kafka_bootstrap, topics.approved).values()) + sum(
            high_watermarks(kafka_bootstrap, topics.investigate).values())

    wait_until(lambda: outputs() >= len(claims) // 4, 90, "a quarter of the decisions")
    first.kill9()
    ends = high_watermarks(kafka_bootstrap, topics.claims)
    done_before = committed_offsets(kafka_bootstrap, group_id, topics.claims, list(ends))
    assert done_before != ends, "the worker finished before it could be killed mid-stream"

    second = workers("second", env)  # same transactional.id: fences the dead one at once
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=120)
    outcomes = read_outcomes(kafka_bootstrap, topics)

    assert_exactly_once(outcomes, claims)
    assert outcomes.dead_letters == []
    assert second.terminate() == 0


def test_model_service_outage_holds_the_batch_and_loses_nothing(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    workers: Callable[..., Worker],
) -> None:
    before, during = realistic_claims(1_000, seed=14), realistic_claims(2_000, seed=15)
    produce_claims(kafka_bootstrap, topics.claims, before)
    env = worker_env(kafka_bootstrap, topics, group_id, model_service.url,
                     SCORER_RETRY_INITIAL_S="0.05", SCORER_RETRY_MAX_S="0.5")
    worker = workers("worker", env)
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)

    model_service.stop()
    produce_claims(kafka_bootstrap, topics.claims, during)
    worker.wait_log(r"model service unavailable .* not committed, retry 3 ", timeout_s=60)
    ends = high_watermarks(kafka_bootstrap, topics.claims)
    assert committed_offsets(kafka_bootstrap, group_id, topics.claims, list(ends)) != ends
    model_service.start()

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    outcomes = read_outcomes(kafka_bootstrap, topics)
    assert_exactly_once(outcomes, before + during)
    assert "model service is back" in worker.log()
    assert worker.terminate() == 0


class Feeder(threading.Thread):
    """Streams claims at a steady rate until ``hurry`` is set, then sends the rest at once.
    It never sends more than half before ``hurry``: whatever the test waits for before
    setting it is sure to happen mid-stream."""

    def __init__(self, bootstrap: str, topic: str, claims: list[Claim], rate_per_s: float
                 ) -> None:
        super().__init__(name="feeder", daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic = topic
        self.claims = claims
        self.rate_per_s = rate_per_s
        self.hurry = threading.Event()
        self.sent_before_hurry: int | None = None

    def run(self) -> None:
        started = time.monotonic()
        half = len(self.claims) // 2
        for i, claim in enumerate(self.claims):
            if self.sent_before_hurry is None:
                # At most half the stream goes out before ``hurry``; then it waits for it.
                pace = started + i / self.rate_per_s - time.monotonic()
                if self.hurry.wait(120 if i >= half else max(0.0, pace)):
                    self.sent_before_hurry = i
            self.producer.produce(self.topic, claim.to_json(), claim.claim_id.encode())
            self.producer.poll(0)
        self.producer.flush(30)


def test_workers_share_partitions_and_a_rebalance_mid_stream_loses_nothing(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    workers: Callable[..., Worker],
) -> None:
    claims = realistic_claims(10_000, seed=16)
    env = worker_env(kafka_bootstrap, topics, group_id, model_service.url)
    first = workers("first", env, "--first-instance", "0")
    feeder = Feeder(kafka_bootstrap, topics.claims, claims, rate_per_s=500)
    feeder.start()
    first.wait_log(rf"assigned {re.escape(topics.claims)}\[0\]", timeout_s=60)
    # Two more worker processes join while claims stream in: partitions move mid-stream.
    more = workers("more", env, "--instances", "2", "--first-instance", "1")
    more.wait_log(rf"assigned {re.escape(topics.claims)}\[", timeout_s=90)
    feeder.hurry.set()
    feeder.join(60)
    assert feeder.sent_before_hurry is not None
    assert feeder.sent_before_hurry < len(claims), "the rebalance came after the stream ended"

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=120)
    outcomes = read_outcomes(kafka_bootstrap, topics)

    assert_exactly_once(outcomes, claims)
    assert re.search(r"INFO +scorer.loop: revoked", first.log())
    for instance in (1, 2):
        assert re.search(rf"worker {instance} \(transactional.id {group_id}-{instance}\)",
                         more.log())
    assert first.terminate() == 0
    assert more.terminate() == 0


def test_a_second_worker_with_the_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, topics: Topics, group_id: str, model_service: ModelServiceProcess,
    workers: Callable[..., Worker],
) -> None:
    env = worker_env(kafka_bootstrap, topics, group_id, model_service.url)
    zombie = workers("zombie", env)
    zombie.wait_log(rf"assigned {re.escape(topics.claims)}\[", timeout_s=60)
    newer = workers("newer", env)  # same prefix, same instance index 0
    newer.wait_log(r"transactional.id .* scoring", timeout_s=60)
    claims = realistic_claims(2_000, seed=17)
    produce_claims(kafka_bootstrap, topics.claims, claims)

    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    assert zombie.wait(60) == 1
    assert "fenced" in zombie.log()
    assert "a newer worker with this transactional.id took over" in zombie.log()
    assert_exactly_once(read_outcomes(kafka_bootstrap, topics), claims)
    assert newer.terminate() == 0


def test_the_cause_of_a_bare_fatal_error_is_found_so_a_zombie_stays_fenced(
    kafka_bootstrap: str, topics: Topics,
) -> None:
    # Measured on a loaded machine: a fenced worker's produce() raised _FATAL ("Local: Fatal
    # error", fatal flag unset) before any poll() had served the fence; judged as an unknown
    # fatal error, the zombie would have replaced its producer and fenced the newer worker.
    tid = f"zombie-{uuid.uuid4().hex[:8]}"
    zombie = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": tid})
    zombie.init_transactions(30)
    newer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": tid})
    newer.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topics.approved, b"x", b"k")  # its AddPartitions is answered: fenced
    bare: list[KafkaError] = []

    def produce_fails() -> bool:
        try:
            zombie.produce(topics.approved, b"y", b"k")  # never serves the event queue
        except KafkaException as exc:
            bare.append(exc.args[0])
            return True
        return False

    wait_until(produce_fails, 30, "the fenced producer's produce() to fail")
    assert bare[0].code() == KafkaError._FATAL
    cause = fatal_cause(zombie, bare[0])
    assert cause.code() == KafkaError._FENCED
    assert cause.fatal()
    assert classify_txn_error(cause, txn_age_s=0.5, txn_timeout_s=10) is TxnAction.FATAL
