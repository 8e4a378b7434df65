"""The stream worker's integration harness: ``claimflow score`` as a real subprocess, topics,
producing claims, reading the outcome topics the way a downstream consumer does
(read_committed, to the end of every partition), and the exactly-once check."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bench.stack_harness import ManagedProcess
from bench.stack_harness import Topics as Topics  # shared by the stream tests
from claimflow.procs import wait_until as wait_until  # re-exported for the tests
from schemas import Claim, ClaimV2, DeadLetter, Decision
from scorer.recovery import is_unreachable
from tests.integration.model_service_fixture import (
    CLAIMFLOW,
    clean_env,
)

CLAIM_PARTITIONS = 4


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> Topics:
    return Topics(
        claims=make_topic(partitions=CLAIM_PARTITIONS, prefix="claims"),
        approved=make_topic(partitions=2, prefix="approved"),
        investigate=make_topic(partitions=2, prefix="investigate"),
        deadletter=make_topic(partitions=1, prefix="deadletter"),
    )


# --------------------------------------------------------------------------- helpers


def realistic_claims(n: int, seed: int) -> list[Claim]:
    from producer.profiles import generate

    frame = generate("realistic", n, seed=seed)
    columns = [frame[name].tolist() for name in (
        "claim_id", "claim_amount", "num_services", "patient_age", "provider_id",
        "days_since_last_claim")]
    stamps = [cast(pd.Timestamp, ts).to_pydatetime() for ts in frame["submitted_at"]]
    return [
        Claim(claim_id=f"{claim_id}-{seed}", claim_amount=float(amount), num_services=services,
              patient_age=age, provider_id=provider, days_since_last_claim=days,
              submitted_at=stamp)
        for claim_id, amount, services, age, provider, days, stamp in zip(
            *columns, stamps, strict=True)
    ]


Position = tuple[int, int]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
            ) -> list[Position]:
    """Produce (key, value) records in order; returns each one's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    positions: dict[int, Position] = {}
    errors: list[str] = []

    def delivered(index: int) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                positions[index] = (msg.partition() or 0, msg.offset() or 0)
        return report

    for i, (key, value) in enumerate(records):
        producer.produce(topic, value, key, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return [positions[i] for i in range(len(records))]


def produce_claims(bootstrap: str, topic: str, claims: list[Claim]) -> dict[str, Position]:
    positions = produce(bootstrap, topic, [(c.claim_id.encode(), c.to_json()) for c in claims])
    return {claim.claim_id: pos for claim, pos in zip(claims, positions, strict=True)}


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: list[int]
                      ) -> dict[int, int]:
    # read_uncommitted: librdkafka's default (read_committed) asks for *stable* offsets, and
    # the broker holds that answer while the group has transactional offsets pending. Right
    # after a kill -9 that is until the dead worker's transaction times out, longer than the
    # timeout here (CI failed on it once). Either way only committed offsets are returned.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def wait_group_done(bootstrap: str, group: str, topic: str, timeout_s: float) -> None:
    """Until the group's committed offsets reach the end of every input partition."""
    ends = high_watermarks(bootstrap, topic)

    def done() -> bool:
        try:
            return committed_offsets(bootstrap, group, topic, list(ends)) == ends
        except KafkaException as exc:
            # A coordinator that is just being found or loaded answers NOT_COORDINATOR or
            # COORDINATOR_LOAD_IN_PROGRESS: ask again (a fatal error still fails the test).
            if not is_unreachable(exc.args[0]):
                raise
            return False

    wait_until(done, timeout_s, f"group {group} to commit {ends} on {topic}")


def drain(bootstrap: str, topics: list[str]) -> list[Message]:
    """Every committed message of ``topics``, read to the end of each partition."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"drain-{uuid.uuid4().hex}",
        "isolation.level": "read_committed", "enable.partition.eof": True,
        "enable.auto.commit": False,
    })
    assignment = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in topics
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ]
    consumer.assign(assignment)
    pending = {(tp.topic, tp.partition) for tp in assignment}
    messages: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is None:
                    messages.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic() or "", msg.partition() or 0))
                else:
                    raise AssertionError(f"drain: {error}")
    finally:
        consumer.close()
    assert not pending, f"did not reach the end of {pending}"
    return messages


@dataclass
class Outcomes:
    decisions: dict[str, list[Decision]] = field(default_factory=dict)
    topic_of: dict[str, str] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter({claim_id: len(d) for claim_id, d in self.decisions.items()})


def read_outcomes(bootstrap: str, topics: Topics) -> Outcomes:
    outcomes = Outcomes()
    for msg in drain(bootstrap, topics.outcomes):
        value = msg.value() or b""
        if msg.topic() == topics.deadletter:
            outcomes.dead_letters.append(DeadLetter.from_json(value))
            continue
        decision = Decision.from_json(value)
        assert msg.key() == decision.claim_id.encode()
        outcomes.decisions.setdefault(decision.claim_id, []).append(decision)
        outcomes.topic_of[decision.claim_id] = msg.topic() or ""
    return outcomes


class Worker(ManagedProcess):
    """``claimflow score`` as a subprocess in its own session, logging to a file."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str], *args: str) -> None:
        super().__init__(name, [*CLAIMFLOW, "score", *args], env, tmp_path / f"{name}.log")

    def start(self) -> Worker:
        super().start()
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, pattern: str, timeout_s: float) -> None:
        def seen() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return re.search(pattern, self.log()) is not None

        wait_until(seen, timeout_s, f"{pattern!r} in the log of {self.name}")

    def kill9(self) -> None:
        self.kill()

    def terminate(self, timeout_s: float = 60) -> int | None:
        """SIGTERM to the worker alone (like a process manager) and its exit code (None if
        it still runs after ``timeout_s``)."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def cleanup(self) -> None:
        if self.alive():
            self.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(name: str, env: dict[str, str], *args: str) -> Worker:
        worker = Worker(tmp_path, name, env, *args).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.cleanup()


def worker_env(bootstrap: str, topics: Topics, group: str, model_url: str,
               **extra: str) -> dict[str, str]:
    return clean_env(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SCORER_INPUT_TOPIC=topics.claims,
        SCORER_APPROVED_TOPIC=topics.approved,
        SCORER_INVESTIGATE_TOPIC=topics.investigate,
        SCORER_DEADLETTER_TOPIC=topics.deadletter,
        SCORER_GROUP_ID=group,
        SCORER_MODEL_URL=model_url,
        SCORER_TRANSACTIONAL_ID_PREFIX=group,
        **extra,
    )


def assert_exactly_once(outcomes: Outcomes, claims: Sequence[Claim | ClaimV2]) -> None:
    expected = {claim.claim_id for claim in claims}
    counts = outcomes.counts
    doubled = {claim_id: n for claim_id, n in counts.items() if n > 1}
    assert not doubled, f"{len(doubled)} claims decided more than once: {list(doubled)[:5]}"
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} claims never decided: {sorted(missing)[:5]}"
    assert set(counts) == expected
    assert sum(counts.values()) == len(claims)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


# --------------------------------------------------------------------------- tests
