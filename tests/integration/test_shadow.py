"""Shadow scoring end to end: a real broker, a real ``claimflow serve-model`` serving a
champion and, in shadow, a challenger (a second Isolation Forest), and a real
``claimflow score`` worker. Every decided claim has exactly one ShadowScore on the shadow
topic whose scores are what each model gives offline, and routing is the champion's alone;
without a challenger no shadow record is written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from schemas import CLAIM_FEATURES, ShadowScore
from scorer.model_settings import ModelSettings
from scoring.model import ServedModel, Wanted, load_served_model
from scoring.score_file import score_claims
from tests.integration import model_service_fixture, worker_harness
from tests.integration.model_service_fixture import (
    Champion,
    ModelServiceProcess,
    make_champion,
)
from tests.integration.worker_harness import (
    Topics,
    Worker,
    assert_exactly_once,
    drain,
    produce_claims,
    read_outcomes,
    realistic_claims,
    wait_group_done,
    worker_env,
)

pytestmark = pytest.mark.integration

champion = model_service_fixture.champion
_model_service_session = model_service_fixture._model_service_session
model_service = model_service_fixture.model_service
workers = worker_harness.workers  # the fixture, registered in this module


@dataclass(frozen=True)
class ShadowTopics(Topics):
    shadow: str = ""


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> ShadowTopics:
    return ShadowTopics(
        claims=make_topic(partitions=3, prefix="claims"),
        approved=make_topic(partitions=2, prefix="approved"),
        investigate=make_topic(partitions=2, prefix="investigate"),
        deadletter=make_topic(partitions=1, prefix="deadletter"),
        shadow=make_topic(partitions=2, prefix="shadow"),
    )


def make_challenger(home: Path, seed: int = 13) -> Champion:
    """Another forest on other realistic claims, exported as version 2 into ``home``."""
    from sklearn.ensemble import IsolationForest

    from features.reference import build_reference
    from modelstore.bento import export_to_bentoml
    from producer.profiles import generate

    frame = generate("realistic", 4_000, seed=seed)
    x = frame[list(CLAIM_FEATURES)].to_numpy(dtype=np.float64)
    estimator = IsolationForest(n_estimators=80, contamination=0.08, random_state=seed).fit(x)
    tag = export_to_bentoml(estimator, build_reference(x), "2", f"test-run-{seed}",
                            home / "bentoml")
    return Champion(home=home, tag=tag, estimator=estimator)


class ShadowService(ModelServiceProcess):
    """The champion, and the challenger pinned in shadow (no registry)."""

    def __init__(self, champion: Champion, challenger: Champion, log_path: Path) -> None:
        super().__init__(champion, log_path)
        self.challenger = challenger

    def env(self) -> dict[str, str]:
        return {**super().env(), "MODEL_SHADOW_TAG": self.challenger.tag}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Champion, Champion]:
    home = tmp_path_factory.mktemp("shadow-home")
    return make_champion(home), make_challenger(home)


@pytest.fixture(scope="module")
def shadow_service(pair: tuple[Champion, Champion], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ShadowService]:
    service = ShadowService(*pair, tmp_path_factory.mktemp("shadow-log") / "model.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


def served(model: Champion) -> ServedModel:
    settings = ModelSettings(claimflow_home=str(model.home))
    return load_served_model(Wanted(tag=model.tag, version=None, run_id=None),
                             settings.bentoml_home, settings)


def read_shadow(bootstrap: str, topic: str) -> list[ShadowScore]:
    records = []
    for message in drain(bootstrap, [topic]):
        record = ShadowScore.from_json(message.value() or b"")
        assert message.key() == record.claim_id.encode()
        records.append(record)
    return records


def test_every_decided_claim_has_one_shadow_score_equal_to_both_offline_models(
    kafka_bootstrap: str, topics: ShadowTopics, group_id: str, shadow_service: ShadowService,
    pair: tuple[Champion, Champion], workers: Callable[..., Worker],
) -> None:
    champ, challenger = pair
    claims = realistic_claims(2_000, seed=21)
    produce_claims(kafka_bootstrap, topics.claims, claims)
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id,
                                          shadow_service.url,
                                          SCORER_SHADOW_TOPIC=topics.shadow,
                                          SCORER_BATCH_MAX_SIZE="300"))
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)

    outcomes = read_outcomes(kafka_bootstrap, topics)
    assert_exactly_once(outcomes, claims)
    shadows = read_shadow(kafka_bootstrap, topics.shadow)
    by_id = {record.claim_id: record for record in shadows}
    assert len(by_id) == len(shadows) == len(claims)  # exactly one per decided claim

    offline_champion = list(score_claims(served(champ), claims))
    offline_challenger = list(score_claims(served(challenger), claims))
    sklearn_scores, sklearn_verdicts = champ.offline(claims)
    for claim, ours, theirs, sk_score, sk_verdict in zip(
            claims, offline_champion, offline_challenger, sklearn_scores, sklearn_verdicts,
            strict=True):
        [decision] = outcomes.decisions[claim.claim_id]
        record = by_id[claim.claim_id]
        # Routing is the champion's, unchanged (and equal to scikit-learn's own verdict).
        assert decision.decision == ours["decision"] == sk_verdict
        assert abs(decision.anomaly_score - sk_score) <= 1e-9
        expected_topic = topics.investigate if sk_verdict == "investigate" else topics.approved
        assert outcomes.topic_of[claim.claim_id] == expected_topic
        # The shadow record: each model's own offline answer.
        assert record.champion.anomaly_score == ours["anomaly_score"] == decision.anomaly_score
        assert record.champion.decision == ours["decision"]
        assert record.champion.model.version == "1"
        assert record.challenger.anomaly_score == theirs["anomaly_score"]
        assert record.challenger.threshold == theirs["threshold"]
        assert record.challenger.decision == theirs["decision"]
        assert record.challenger.model.version == "2"
        assert record.agree == (ours["decision"] == theirs["decision"])
        assert record.source == decision.source
        assert record.decided_at == decision.decided_at
    # Two different forests: the test would not notice a challenger that copied the champion.
    assert any(not record.agree for record in shadows)
    assert any(r.challenger.anomaly_score != r.champion.anomaly_score for r in shadows)
    assert worker.terminate() == 0


def test_without_a_challenger_no_shadow_record_is_written(
    kafka_bootstrap: str, topics: ShadowTopics, group_id: str,
    model_service: ModelServiceProcess, workers: Callable[..., Worker],
) -> None:
    claims = realistic_claims(300, seed=22)
    produce_claims(kafka_bootstrap, topics.claims, claims)
    worker = workers("worker", worker_env(kafka_bootstrap, topics, group_id, model_service.url,
                                          SCORER_SHADOW_TOPIC=topics.shadow))
    wait_group_done(kafka_bootstrap, group_id, topics.claims, timeout_s=90)
    assert_exactly_once(read_outcomes(kafka_bootstrap, topics), claims)
    assert read_shadow(kafka_bootstrap, topics.shadow) == []
    assert worker.terminate() == 0
