"""Every service reads the stream's topic names from one place, under its own variables."""

from __future__ import annotations

import pytest

from broker.settings import KafkaSettings
from claimflow.investigate_run import InvestigateSettings
from claimflow.settings import TOPICS
from gateway.settings import GatewaySettings
from producer.settings import ProducerSettings
from scorer.worker_settings import ScorerSettings


@pytest.fixture(autouse=True)
def no_topic_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix in ("SCORER", "GATEWAY", "KAFKA", "PRODUCER", "INVESTIGATE"):
        for name in ("TOPIC", "INPUT_TOPIC", "CLAIMS_TOPIC", "APPROVED_TOPIC",
                     "INVESTIGATE_TOPIC", "DEADLETTER_TOPIC", "LABELS_TOPIC", "SHADOW_TOPIC",
                     "MEMBER_STATE_TOPIC", "GROUP_ID"):
            monkeypatch.delenv(f"{prefix}_{name}", raising=False)


def test_the_defaults_are_the_stream_topics() -> None:
    assert (TOPICS.claims, TOPICS.approved, TOPICS.investigate, TOPICS.deadletter,
            TOPICS.labels, TOPICS.shadow) == ("claims", "claims.approved", "claims.investigate",
                                             "claims.deadletter", "claims.labels",
                                             "claims.shadow")
    assert TOPICS.changelog("claimflow-scorer") == "claimflow-scorer.member-state"


def test_every_service_defaults_to_the_shared_names() -> None:
    scorer, gateway, kafka = ScorerSettings(), GatewaySettings(), KafkaSettings()
    assert (scorer.input_topic, gateway.claims_topic, kafka.claims_topic,
            ProducerSettings().topic, InvestigateSettings().claims_topic) == (TOPICS.claims,) * 5
    assert {scorer.approved_topic, gateway.approved_topic, kafka.approved_topic} == {
        TOPICS.approved}
    assert {scorer.investigate_topic, gateway.investigate_topic, kafka.investigate_topic,
            InvestigateSettings().investigate_topic} == {TOPICS.investigate}
    assert {scorer.deadletter_topic, gateway.deadletter_topic, kafka.deadletter_topic} == {
        TOPICS.deadletter}
    assert {gateway.labels_topic, kafka.labels_topic, InvestigateSettings().labels_topic} == {
        TOPICS.labels}
    assert {scorer.shadow_topic, gateway.shadow_topic, kafka.shadow_topic} == {TOPICS.shadow}
    assert scorer.changelog_topic == TOPICS.changelog(scorer.group_id)


def test_each_service_keeps_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_APPROVED_TOPIC", "s.ok")
    monkeypatch.setenv("GATEWAY_APPROVED_TOPIC", "g.ok")
    monkeypatch.setenv("SCORER_GROUP_ID", "team")
    assert ScorerSettings().approved_topic == "s.ok"
    assert GatewaySettings().approved_topic == "g.ok"
    assert KafkaSettings().approved_topic == TOPICS.approved
    assert ScorerSettings().changelog_topic == "team.member-state"
