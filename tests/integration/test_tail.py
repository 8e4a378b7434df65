"""``claimflow tail`` against the real broker: committed messages only, each validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from schemas import Claim, DeadLetter, Decision, ModelRef, Reason, StreamSource

pytestmark = pytest.mark.integration

CLAIMFLOW = (sys.executable, "-c", "from claimflow.cli import main; main()")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def decision(claim_id: str, kind: str, offset: int) -> Decision:
    flagged = kind == "investigate"
    return Decision(
        claim=Claim(
            claim_id=claim_id, claim_amount=14200.0 if flagged else 900.0, num_services=2,
            patient_age=50, provider_id=3, days_since_last_claim=40, submitted_at=NOW,
        ),
        decision="investigate" if flagged else "approve",
        anomaly_score=0.71 if flagged else 0.41,
        threshold=0.6,
        model=ModelRef(name="claim-anomaly", version="2"),
        reasons=[Reason(feature="claim_amount", value=14200.0, percentile=99.9, direction="high",
                        message="claim_amount 14,200 is above the 99.9th percentile")]
        if flagged else [],
        decided_at=NOW,
        source=StreamSource(topic="claims", partition=0, offset=offset),
    )


def run_tail(
    bootstrap: str, topics: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCORER_", "KAFKA_"))},
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCORER_APPROVED_TOPIC": topics["approved"],
        "SCORER_INVESTIGATE_TOPIC": topics["investigate"],
        "SCORER_DEADLETTER_TOPIC": topics["deadletter"],
    }
    return subprocess.run(
        [*CLAIMFLOW, "tail", *args], env=env, capture_output=True, text=True, timeout=90,
        check=False,
    )


@pytest.fixture
def outcome_topics(make_topic: Callable[..., str]) -> dict[str, str]:
    return {name: make_topic(partitions=2, prefix=f"tail-{name}")
            for name in ("approved", "investigate", "deadletter")}


def test_tail_prints_committed_decisions_and_reports_invalid_ones(
    kafka_bootstrap: str, outcome_topics: dict[str, str]
) -> None:
    topic = outcome_topics["investigate"]
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"tail-test-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, decision("C-1", "investigate", 1).to_json(), b"C-1")
    producer.produce(topic, b"this is not a decision", b"junk")
    producer.produce(topic, decision("C-2", "approve", 2).to_json(), b"C-2")  # wrong topic
    producer.commit_transaction(30)
    # An aborted transaction: a read_committed consumer must never show it.
    producer.begin_transaction()
    producer.produce(topic, decision("C-ABORTED", "investigate", 3).to_json(), b"C-ABORTED")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, decision("C-3", "investigate", 4).to_json(), b"C-3")
    producer.commit_transaction(30)

    done = run_tail(kafka_bootstrap, outcome_topics, "investigate", "--from-beginning",
                    "--max-messages", "4", "--timeout", "60")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["C-1", "C-3"]
    for line in lines:
        assert "investigate" in line
        assert "0.7100" in line
        assert "above the 99.9th percentile" in line
        assert "claim-anomaly v2" in line
    assert "C-ABORTED" not in done.stdout + done.stderr
    assert done.stderr.count("invalid message at") == 2
    assert "invalid Decision" in done.stderr
    assert "decision 'approve' on the investigate topic" in done.stderr
    assert "2 invalid message(s) reported" in done.stderr


def test_tail_json_mode_and_dead_letters(
    kafka_bootstrap: str, outcome_topics: dict[str, str]
) -> None:
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    approved = decision("C-9", "approve", 9)
    producer.produce(outcome_topics["approved"], approved.to_json(), b"C-9")
    letter = DeadLetter.for_message(
        value=b"\x00junk", key=b"K", error_kind="not_json", error="not JSON: expected value",
        source=StreamSource(topic="claims", partition=1, offset=5), failed_at=NOW,
    )
    producer.produce(outcome_topics["deadletter"], letter.to_json(), b"K")
    producer.flush(30)

    as_json = run_tail(kafka_bootstrap, outcome_topics, "approved", "--from-beginning", "--json",
                       "--max-messages", "1", "--timeout", "60")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["claim"]["claim_id"] == "C-9"
    assert Decision.from_json(as_json.stdout) == approved

    dead = run_tail(kafka_bootstrap, outcome_topics, "deadletter", "--from-beginning",
                    "--max-messages", "1", "--timeout", "60")
    assert dead.returncode == 0, dead.stderr
    assert dead.stdout.strip() == "claims[1]@5  not_json  not JSON: expected value  (5 bytes)"


def test_tail_stops_at_its_timeout_when_nothing_comes(
    kafka_bootstrap: str, outcome_topics: dict[str, str]
) -> None:
    done = run_tail(kafka_bootstrap, outcome_topics, "investigate", "--timeout", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
