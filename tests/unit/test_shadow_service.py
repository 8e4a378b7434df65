"""The model service's shadow answer, in process (no BentoML server): ``/score_batch`` with
``"shadow": true`` answers the champion's results unchanged beside the challenger's answers
to the same claims; a challenger that is missing, fails to load or fails to answer never
fails the request. The same against a real service: tests/integration/test_shadow.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import orjson
import pytest
from sklearn.ensemble import IsolationForest

from features.reference import build_reference
from schemas import Claim, ClaimV2, ModelRef
from scorer.holder import ModelHolder, shadow_source_from
from scorer.model_settings import ModelSettings
from scorer.service import SHADOW_FAILURES, ClaimAnomalyService, ClaimList
from scoring.model import (
    AliasMissing,
    ModelLoadError,
    PinnedSource,
    RegistrySource,
    ServedModel,
    Wanted,
    build_served_model,
)
from tests.v1_factory import claims_for

SETTINGS = ModelSettings(claimflow_home="/nonexistent")
# The class under BentoML's service wrapper, and the coroutine under the API wrapper.
INNER: Any = cast(Any, ClaimAnomalyService).inner


def forest(training: np.ndarray, version: str, seed: int, trees: int) -> ServedModel:
    estimator = IsolationForest(n_estimators=trees, contamination=0.05,
                                random_state=seed).fit(training)
    ref = ModelRef(name="claim-anomaly", version=version, run_id=f"run-{version}")
    return build_served_model(estimator, build_reference(training), ref,
                              f"claim-anomaly:v{version}", SETTINGS)


@pytest.fixture(scope="module")
def training() -> np.ndarray:
    rng = np.random.default_rng(11)
    n = 3_000
    return np.column_stack([
        np.round(rng.lognormal(7.0, 0.5, n), 2), rng.integers(1, 8, n),
        rng.integers(18, 91, n), rng.integers(1, 1001, n), rng.integers(0, 366, n),
    ]).astype(np.float64)


@pytest.fixture(scope="module")
def models(training: np.ndarray) -> tuple[ServedModel, ServedModel]:
    return forest(training, "1", 3, 40), forest(training, "2", 4, 30)


class Source:
    """A model source the test controls."""

    def __init__(self, wanted: Wanted | Exception) -> None:
        self.answer = wanted

    def wanted(self) -> Wanted:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def service(champion: ServedModel, challenger: ServedModel | None,
            shadow_source: Source | None = None) -> Any:
    """The service object without its constructor (which reads the environment)."""
    svc: Any = object.__new__(INNER)
    svc.settings = SETTINGS
    svc.holder = ModelHolder(SETTINGS, PinnedSource(champion.tag))
    svc.holder.current = champion
    source = shadow_source or Source(Wanted(tag=challenger.tag if challenger else "x:v9",
                                            version=None, run_id=None))
    svc.shadow = ModelHolder(SETTINGS, source)
    svc.shadow.current = challenger
    return svc


def score_batch(svc: Any, rows: np.ndarray, **kwargs: Any) -> bytes:
    api = INNER.__dict__["score_batch"].func
    response = asyncio.run(api(svc, ClaimList(claims_for(rows)), None, **kwargs))
    return bytes(response.body)


def failures(stage: str) -> float:
    return float(SHADOW_FAILURES.labels(stage)._value.get())


def test_the_shadow_answer_is_both_models_on_the_same_claims(
    models: tuple[ServedModel, ServedModel], training: np.ndarray
) -> None:
    champion, challenger = models
    rows = training[:200]
    body = orjson.loads(score_batch(service(champion, challenger), rows, shadow=True))
    assert body["results"] == orjson.loads(champion.score_json(claims_for(rows)))
    # The challenger's verdicts as columns, without reasons (a shadow record never reads
    # them): the same scores, threshold and decisions as its explained answers.
    assert body["shadow"] == as_columns(orjson.loads(challenger.score_json(claims_for(rows))))
    assert body["shadow"]["model"]["version"] == "2"
    # Two different forests: their scores differ.
    assert [r["anomaly_score"] for r in body["results"]] != body["shadow"]["scores"]


def as_columns(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Explained answers (all scored) as ``ServedModel.verdicts_json`` writes them."""
    return {"model": answers[0]["model"], "threshold": answers[0]["threshold"],
            "claim_ids": [a["claim_id"] for a in answers],
            "scores": [a["anomaly_score"] for a in answers],
            "decisions": [a["decision"] for a in answers]}


def test_a_claim_the_challenger_cannot_read_gets_null_columns(
    models: tuple[ServedModel, ServedModel], training: np.ndarray
) -> None:
    from tests.v2_factory import v2_claim

    _, challenger = models
    v1 = claims_for(training[:3])
    v2 = ClaimV2.model_validate_json(orjson.dumps(v2_claim(claim_id="C-v2")))
    mixed: list[Claim | ClaimV2] = [v1[0], v2, v1[1], v1[2]]
    columns = orjson.loads(challenger.verdicts_json(mixed))
    assert columns["claim_ids"] == [claim.claim_id for claim in mixed]
    expected = as_columns(orjson.loads(challenger.score_json(v1)))
    assert columns["scores"] == [expected["scores"][0], None, *expected["scores"][1:]]
    assert columns["decisions"] == [expected["decisions"][0], None, *expected["decisions"][1:]]


def test_a_challenger_alias_on_the_champion_itself_is_not_scored_twice(
    models: tuple[ServedModel, ServedModel], training: np.ndarray
) -> None:
    champion, _ = models
    body = orjson.loads(score_batch(service(champion, champion), training[:5], shadow=True))
    assert body["shadow"] is None


def test_without_shadow_the_answer_keeps_its_shape(
    models: tuple[ServedModel, ServedModel], training: np.ndarray
) -> None:
    champion, challenger = models
    rows = training[:20]
    assert score_batch(service(champion, challenger), rows) == champion.score_json(
        claims_for(rows))


def test_no_challenger_answers_null(models: tuple[ServedModel, ServedModel],
                                    training: np.ndarray) -> None:
    champion, _ = models
    body = orjson.loads(score_batch(service(champion, None), training[:5], shadow=True))
    assert body["shadow"] is None
    assert len(body["results"]) == 5


class BrokenModel(ServedModel):
    def verdicts_json(self, claims: Any, members: Any = None) -> bytes:
        raise RuntimeError("challenger bug")


def test_a_failing_challenger_is_counted_and_the_champion_answers(
    models: tuple[ServedModel, ServedModel], training: np.ndarray
) -> None:
    champion, challenger = models
    fields = ("ref", "tag", "forest", "explainer", "feature_set", "codes")
    broken = BrokenModel(**{name: getattr(challenger, name) for name in fields})
    before = failures("score")
    body = orjson.loads(score_batch(service(champion, broken), training[:5], shadow=True))
    assert body["shadow"] is None
    assert body["results"] == orjson.loads(champion.score_json(claims_for(training[:5])))
    assert failures("score") == before + 1


def test_a_removed_alias_ends_shadowing_and_a_load_failure_is_counted(
    models: tuple[ServedModel, ServedModel],
) -> None:
    champion, challenger = models
    gone = service(champion, challenger, Source(AliasMissing("no version with alias")))
    before = failures("load")
    assert gone._refresh_shadow() is False
    assert gone.shadow.current is None
    assert failures("load") == before  # no challenger is not a failure
    broken = service(champion, challenger, Source(ModelLoadError("not in the store")))
    assert broken._refresh_shadow() is False
    assert broken.shadow.current is None
    assert failures("load") == before + 1


def test_which_challenger_is_shadowed() -> None:
    registry = shadow_source_from(SETTINGS)
    assert isinstance(registry, RegistrySource)
    assert registry.alias == "challenger"
    assert shadow_source_from(ModelSettings(shadow_alias="")) is None
    # A pinned champion has no registry: only a pinned challenger is shadowed.
    assert shadow_source_from(ModelSettings(tag="claim-anomaly:v3")) is None
    pinned = shadow_source_from(ModelSettings(tag="claim-anomaly:v3",
                                              shadow_tag="claim-anomaly:v4"))
    assert pinned == PinnedSource("claim-anomaly:v4")
