"""The stream worker's Kafka client configuration."""

from __future__ import annotations

from scorer.kafka_config import consumer_config, producer_config
from scorer.worker_settings import ScorerSettings


def test_consumer_reads_committed_and_never_commits_on_its_own() -> None:
    config = consumer_config(ScorerSettings(group_id="g"), 0)
    assert config["isolation.level"] == "read_committed"
    assert config["enable.auto.commit"] is False
    assert config["group.id"] == "g"
    assert config["auto.offset.reset"] == "earliest"


def test_each_instance_has_its_own_stable_transactional_id() -> None:
    settings = ScorerSettings(transactional_id_prefix="cf-host")
    ids = [producer_config(settings, i)["transactional.id"] for i in range(3)]
    assert ids == ["cf-host-0", "cf-host-1", "cf-host-2"]
    assert producer_config(settings, 1)["transactional.id"] == "cf-host-1"


def test_workers_are_dynamic_group_members_by_default() -> None:
    assert "group.instance.id" not in consumer_config(ScorerSettings(group_id="g"), 0)


def test_a_static_member_is_named_like_its_transactional_producer() -> None:
    settings = ScorerSettings(transactional_id_prefix="cf-host", static_membership=True)
    for instance in range(3):
        assert (consumer_config(settings, instance)["group.instance.id"]
                == producer_config(settings, instance)["transactional.id"])
