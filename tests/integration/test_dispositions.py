# ruff: noqa: F811 - pytest fixtures are imported from helper modules and used as arguments
"""Dispositions against the real broker: a label posted to the real gateway lands on the
compacted labels topic and in the queue view; ``claimflow investigate`` labels investigated
claims from the claims topic's ground truth, within its daily capacity."""

from __future__ import annotations

import itertools
import signal
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from schemas import ClaimV2, Decision, GatewaySource, Label, ModelRef, StreamSource
from tests.integration.gateway_harness import (  # noqa: F401 - pytest fixtures
    GatewayServer,
    GatewayTopics,
    StreamWorker,
    claim,
    gateway_env,
    gateway_factory,
    gateway_model,
    gateway_topics,
    labels_topic,
    stream_worker_factory,
    unusual,
    wait_until,
)
from tests.integration.kafka_helpers import consume_until
from tests.integration.model_service_fixture import CLAIMFLOW, ModelServiceProcess, clean_env
from tests.v2_factory import v2_claims, without_labels

pytestmark = pytest.mark.integration


def labels_on(bootstrap: str, topic: str, expected: int, timeout_s: float) -> list[Label]:
    return [Label.from_json(m.value() or b"")
            for m in consume_until(bootstrap, [topic], expected, timeout_s=timeout_s)]


def queue(client: httpx.Client, status: str) -> dict[str, str | None]:
    answer = client.get("/api/v1/outcomes", params={"decision": "investigate",
                                                     "status": status})
    assert answer.status_code == 200, answer.text
    return {item["decision"]["claim"]["claim_id"]:
            item["label"]["disposition"] if item["label"] else None
            for item in answer.json()["items"]}


def test_a_posted_disposition_lands_on_the_labels_topic_and_in_the_queue(
    gateway_factory: Callable[..., GatewayServer], kafka_bootstrap: str,
    gateway_model: ModelServiceProcess, gateway_topics: GatewayTopics, labels_topic: str,
    group_id: str, stream_worker_factory: Callable[..., StreamWorker],
) -> None:
    stream_worker_factory(gateway_model.url).wait_assigned()  # decides what the gateway sends
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_LABELS_TOPIC=labels_topic,
                                          GATEWAY_DECISION_TIMEOUT_S="30"))
    prefix = uuid.uuid4().hex[:6]
    odd, unsure, fine = f"{prefix}-odd", f"{prefix}-unsure", f"{prefix}-ok"
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for body in (unusual(odd), unusual(unsure), claim(fine)):
            assert client.post("/api/v1/claims", json=body).status_code == 201
        wait_until(lambda: len(queue(client, "all")) == 2, 20, "both claims in the queue")

        posted = client.post(f"/api/v1/claims/{odd}/disposition",
                             json={"disposition": "fraud", "note": "ghost patient",
                                   "investigator": "alice"})
        assert posted.status_code == 201, posted.text
        label = Label.model_validate_json(posted.content)
        assert (label.claim_id, label.disposition, label.investigator) == (odd, "fraud", "alice")
        assert label.answers.decision == "investigate"
        assert client.post(f"/api/v1/claims/{unsure}/disposition",
                           json={"disposition": "needs_info",
                                 "investigator": "bob"}).status_code == 201

        # On the topic: one message per label, keyed by claim_id, exactly what was answered.
        messages = consume_until(kafka_bootstrap, [labels_topic], 3, timeout_s=6)
        assert sorted((m.key() or b"").decode() for m in messages) == sorted([odd, unsure])
        [on_topic] = [Label.from_json(m.value() or b"") for m in messages
                      if m.key() == odd.encode()]
        assert on_topic == label

        # The outcome view read them back: the fraud claim left the open queue.
        wait_until(lambda: queue(client, "all") == {odd: "fraud", unsure: "needs_info"}, 20,
                   "the view to show both dispositions")
        assert queue(client, "open") == {unsure: "needs_info"}
        looked_up = client.get(f"/api/v1/claims/{odd}/disposition")
        assert looked_up.status_code == 200
        assert Label.model_validate_json(looked_up.content) == label

        # A later disposition replaces the earlier one (the view, like compaction).
        assert client.post(f"/api/v1/claims/{unsure}/disposition",
                           json={"disposition": "legitimate",
                                 "investigator": "bob"}).status_code == 201
        wait_until(lambda: queue(client, "open") == {}, 20, "the queue to have no open claim")

        refused = client.post(f"/api/v1/claims/{fine}/disposition",
                              json={"disposition": "fraud", "investigator": "alice"})
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("not-investigated")
        unknown = client.post(f"/api/v1/claims/{prefix}-nobody/disposition",
                              json={"disposition": "fraud", "investigator": "alice"})
        assert unknown.status_code == 404


# -- claimflow investigate ----------------------------------------------------------------


def investigate_decision(claim: dict[str, Any], *, gateway: bool = False) -> Decision:
    contract = ClaimV2.from_json(orjson.dumps(without_labels(claim)))
    source = (GatewaySource(request_id="r") if gateway
              else StreamSource(topic="claims", partition=0, offset=0))
    return Decision(claim=contract, decision="investigate", anomaly_score=0.8, threshold=0.5,
                    model=ModelRef(name="claim-anomaly", version="1"),
                    decided_at=datetime.now(UTC), source=source)


def test_simulated_team_labels_investigated_claims_from_ground_truth_within_capacity(
    make_topic: Callable[..., str], labels_topic: str, kafka_bootstrap: str, tmp_path: Path,
) -> None:
    claims_topic = make_topic(partitions=2, prefix="claims")
    investigate_topic = make_topic(partitions=2, prefix="investigate")
    claims = v2_claims(11, seed=5, prefix=uuid.uuid4().hex[:6])
    for i, c in enumerate(claims):  # ground truth: every third claim is fraud
        c["is_anomaly"], c["pattern"] = (True, "upcoding") if i % 3 == 0 else (False, "")
    labelled, no_truth, via_gateway, by_person = claims[:8], claims[8], claims[9], claims[10]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for c in claims:
        headers = None if c is no_truth else [
            ("is_anomaly", b"true" if c["is_anomaly"] else b"false"),
            ("pattern", c["pattern"].encode())]
        producer.produce(claims_topic, key=c["member_id"].encode(),
                         value=orjson.dumps(without_labels(c)), headers=headers)
    for c in claims:
        decision = investigate_decision(c, gateway=c is via_gateway)
        producer.produce(investigate_topic, key=decision.claim_id.encode(),
                         value=decision.to_json())
    earlier = Label.answering(investigate_decision(by_person), "legitimate",
                              investigator="alice", decided_at=datetime.now(UTC))
    producer.produce(labels_topic, key=earlier.claim_id.encode(), value=earlier.to_json())
    assert producer.flush(30) == 0

    day_s = 5.0
    log = (tmp_path / "investigate.log").open("wb")
    process = subprocess.Popen(
        [*CLAIMFLOW, "investigate", "--per-day", "3", "--delay", "0",
         "--day-seconds", str(day_s)],
        env=clean_env(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                      INVESTIGATE_CLAIMS_TOPIC=claims_topic,
                      INVESTIGATE_INVESTIGATE_TOPIC=investigate_topic,
                      INVESTIGATE_LABELS_TOPIC=labels_topic, INVESTIGATE_SUMMARY_INTERVAL_S="1"),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        # 8 answers at 3 a day: days 0, 1 and 2 (plus alice's earlier label on the topic).
        labels = labels_on(kafka_bootstrap, labels_topic, 9, timeout_s=4 * day_s + 20)
        # Nothing more comes: the gateway claim, the claim without truth, alice's claim.
        assert len(labels_on(kafka_bootstrap, labels_topic, 10, timeout_s=day_s)) == 9
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        log.close()
    output = (tmp_path / "investigate.log").read_text()
    assert code == 0, output

    simulated = sorted((lb for lb in labels if lb.investigator == "simulated"),
                       key=lambda lb: lb.decided_at)
    assert [lb for lb in labels if lb.investigator != "simulated"] == [earlier]
    truth = {c["claim_id"]: c for c in labelled}
    assert sorted(lb.claim_id for lb in simulated) == sorted(truth)
    for lb in simulated:
        expected = "fraud" if truth[lb.claim_id]["is_anomaly"] else "legitimate"
        assert lb.disposition == expected, lb
        assert lb.note == ("ground truth: upcoding" if expected == "fraud"
                           else "ground truth: normal claim")
        assert lb.answers.model.version == "1"

    # Capacity: at most 3 a day. Any 7 consecutive answers span three days, so more than
    # one day's length; and the answers come in groups of 3, 3 and 2 a day apart.
    times = [lb.decided_at.timestamp() for lb in simulated]
    assert times[6] - times[0] > day_s, times
    assert times[7] - times[1] > day_s, times
    gaps = [second - first for first, second in itertools.pairwise(times)]
    assert [i for i, gap in enumerate(gaps) if gap > day_s / 2] == [2, 5], times
    assert "1 without ground truth and 1 gateway claims" in output, output
