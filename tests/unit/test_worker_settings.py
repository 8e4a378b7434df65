"""The stream worker's settings (``SCORER_`` prefix)."""

from __future__ import annotations

import pytest

from scorer.worker_settings import ScorerSettings


def test_settings_read_the_scorer_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_INPUT_TOPIC", "claims-x")
    monkeypatch.setenv("SCORER_BATCH_MAX_SIZE", "64")
    monkeypatch.setenv("SCORER_TRANSACTIONAL_ID_PREFIX", "cf")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:1")
    settings = ScorerSettings()
    assert settings.input_topic == "claims-x"
    assert settings.batch_max_size == 64
    assert settings.kafka_bootstrap_servers == "broker:1"
    assert settings.transactional_id(3) == "cf-3"
    assert settings.group_id == "claimflow-scorer"
    assert settings.outcome_topic("deadletter") == "claims.deadletter"


def test_settings_reject_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORER_BATCH_MAX_SIZE", "0")
    with pytest.raises(ValueError, match="batch_max_size"):
        ScorerSettings()


def test_dead_letters_of_the_largest_allowed_claims_fit_the_broker_default() -> None:
    with pytest.raises(ValueError, match="max_claim_bytes"):
        ScorerSettings(max_claim_bytes=2_000_000)
    largest = ScorerSettings(max_claim_bytes=512_000).max_claim_bytes
    assert largest * 4 / 3 + 2_000 < 1_000_000
