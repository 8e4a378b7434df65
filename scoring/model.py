"""The scoring core: a model version from the BentoML store, compiled, and scoring claims.

* :class:`ServedModel` is immutable: the family's scorer (the compiled Isolation Forest or
  a classifier scoring its fraud probability), the explainer and the
  :class:`schemas.ModelRef` that every answer carries. Scoring is pure.
* Which model: a :class:`ModelSource` says what is :class:`Wanted`: the registry alias
  (``claim-anomaly@champion`` -> version N -> BentoML tag ``claim-anomaly:vN``; never
  "latest"), or a pinned tag for deployments without MLflow; :func:`load_served_model`
  loads and compiles it.

The model service (``scorer``) serves it and the trainer judges the champion with it, so
both score exactly alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import orjson
from pydantic import TypeAdapter

from features.codes import CodeReference
from features.member import MemberFeatures
from features.reasons import SIDES, in_words, resubmission_words
from features.reference import FeatureReference
from features.sets import FeatureSet, FeatureSetError, feature_set, mismatch_message
from features.vector import Evidence, feature_vector, is_resubmission
from schemas import SCHEMA_VERSION, Claim, ClaimV2, MemberContext, ModelRef, ScoreAnswer
from scoring.classifier import (
    GRADIENT_BOOSTING,
    ISOLATION_FOREST,
    Scorer,
    classifier_scorer,
    family_of,
)
from scoring.explain import Explainer, ordinal
from scoring.forest import compile_forest

if TYPE_CHECKING:
    from mlflow import MlflowClient

_RESULTS: Final = TypeAdapter(list[ScoreAnswer])
_ANSWER: Final = TypeAdapter(ScoreAnswer)
AnyClaim = Claim | ClaimV2


class ModelLoadError(RuntimeError):
    """No model can be served (no champion yet, missing export, inconsistent labels)."""


class AliasMissing(ModelLoadError):  # noqa: N818 - reads as what it says
    """No version carries the alias (e.g. no challenger now)."""


class ReasonSettings(Protocol):
    """How a model explains: the tails a feature must fall in to be a reason, and how many
    reasons a claim gets (the model service's ``MODEL_*`` settings have these)."""

    @property
    def max_reasons(self) -> int: ...

    @property
    def reason_high_percentile(self) -> float: ...

    @property
    def reason_low_percentile(self) -> float: ...


@dataclass(frozen=True)
class DefaultReasons:
    """The model service's default reason settings, for scoring outside it (the trainer)."""

    max_reasons: int = 3
    reason_high_percentile: float = 99.0
    reason_low_percentile: float = 1.0


class MissingHistoryError(ValueError):
    """A model that reads member history was asked without it (one context per claim)."""


def member_features(context: MemberContext) -> MemberFeatures:
    return MemberFeatures(**context.model_dump())


@dataclass(frozen=True)
class ServedModel:
    """One model version ready to score. Immutable, shared by concurrent requests."""

    ref: ModelRef
    tag: str
    # The family's scorer: a compiled Isolation Forest (``scoring.forest``) or a classifier
    # whose score is its fraud probability (``scoring.classifier``). The name predates the
    # second family.
    forest: Scorer
    explainer: Explainer
    feature_set: FeatureSet
    codes: CodeReference | None = None  # the stateful sets' code references
    family: str = ISOLATION_FOREST

    @property
    def threshold(self) -> float:
        return self.forest.threshold

    def score(self, claims: Sequence[AnyClaim],
              members: Sequence[MemberFeatures] | None = None) -> list[ScoreAnswer]:
        """Scores, decisions and reasons for a batch, in input order; a claim of another
        contract version than the model reads gets a ``ScoreRefusal`` in its place.
        ``members`` (one per claim) is required when the model reads member history."""
        return _RESULTS.validate_json(self.score_json(claims, members))

    def score_one(self, claim: AnyClaim, member: MemberFeatures | None = None) -> ScoreAnswer:
        """The same answer as ``score([claim], [member])[0]``."""
        return _ANSWER.validate_json(self.score_one_json(claim, member))

    def score_json(self, claims: Sequence[AnyClaim],
                   members: Sequence[MemberFeatures] | None = None) -> bytes:
        """``score`` encoded as a JSON array (what ``/score_batch`` sends)."""
        self._check_members(claims, members)
        version = self.feature_set.claim_version
        if all(claim.schema_version == version for claim in claims):
            return self._scored_json(claims, members)
        # A batch mixing versions (a topic in migration): score the readable claims only and
        # answer a refusal for the others, never features read from the wrong contract.
        readable = [i for i, claim in enumerate(claims) if claim.schema_version == version]
        scored = iter(orjson.loads(self._scored_json(
            [claims[i] for i in readable],
            None if members is None else [members[i] for i in readable],
        )))
        return orjson.dumps([
            next(scored) if claim.schema_version == version else self._refusal(claim)
            for claim in claims
        ])

    def verdicts_json(self, claims: Sequence[AnyClaim],
                      members: Sequence[MemberFeatures] | None = None) -> bytes:
        """The model's verdicts on a batch as columns, without reasons:
        ``{"model", "threshold", "claim_ids", "scores", "decisions"}``, the lists in input
        order, ``null`` score and decision for a claim of another contract version. The
        same scores and decisions as :meth:`score_json` (the resubmission rule included).

        What a shadow answer carries: a shadow record reads only score, threshold and
        decision. Without reasons the explainer's share of the work is saved (about 15 % of
        a v1 forest's scoring, 10 % of a v2 classifier's), and columns are about a fifth of
        the bytes of one answer object per claim, decoded by the worker in one pass."""
        self._check_members(claims, members)
        version = self.feature_set.claim_version
        readable = [i for i, claim in enumerate(claims) if claim.schema_version == version]
        scores: list[float | None]
        decisions: list[str | None]
        if len(readable) == len(claims):
            scores, decisions = self._verdicts(claims, members)  # type: ignore[assignment]
        else:
            scores, decisions = [None] * len(claims), [None] * len(claims)
            some_scores, some_decisions = self._verdicts(
                [claims[i] for i in readable],
                None if members is None else [members[i] for i in readable])
            for i, score, decision in zip(readable, some_scores, some_decisions, strict=True):
                scores[i], decisions[i] = score, decision
        return orjson.dumps({
            "model": self._ref_dict,
            "threshold": self.forest.threshold,
            "claim_ids": [claim.claim_id for claim in claims],
            "scores": scores,
            "decisions": decisions,
        })

    def _check_members(self, claims: Sequence[AnyClaim],
                       members: Sequence[MemberFeatures] | None) -> None:
        if self.feature_set.stateful and (members is None or len(members) != len(claims)):
            raise MissingHistoryError(
                f"model {self.ref.name} v{self.ref.version} (feature set "
                f"{self.feature_set.name}) needs one member context per claim: "
                f"{0 if members is None else len(members)} for {len(claims)} claims (the "
                "stream's member stage and `claimflow score-file` supply them)"
            )
        if self.feature_set.recent_providers and members is not None and any(
                member.providers_7d is None for member in members):
            raise MissingHistoryError(
                f"model {self.ref.name} v{self.ref.version} (feature set "
                f"{self.feature_set.name}) reads providers_7d, which these member contexts "
                "lack: they come from a stream worker older than the model; upgrade the "
                "workers")

    def _verdicts(self, claims: Sequence[AnyClaim],
                  members: Sequence[MemberFeatures] | None) -> tuple[list[float], list[str]]:
        """Scores and decisions of claims the model reads, without reasons."""
        if not claims:
            return [], []
        threshold = self.forest.threshold
        if not self.feature_set.stateful:
            scores = self.forest.anomaly_scores(self.feature_set.matrix(claims)).tolist()
            return scores, ["investigate" if score > threshold else "approve"
                            for score in scores]
        assert members is not None
        vectors, x = self._history_features(claims, members)  # type: ignore[arg-type]
        scores = self.forest.anomaly_scores(x).tolist()
        return scores, [
            "investigate" if is_resubmission(evidence) or score > threshold else "approve"
            for (_, evidence), score in zip(vectors, scores, strict=True)
        ]

    def _scored_json(self, claims: Sequence[AnyClaim],
                     members: Sequence[MemberFeatures] | None = None) -> bytes:
        """Results for claims the model reads, as a JSON array of ``ScoreResult``.

        Built from plain dicts and encoded by orjson: building validated pydantic objects
        only to serialise them again would cost several times the scoring itself.
        """
        if not claims:
            return b"[]"
        if self.feature_set.stateful:
            assert members is not None
            return orjson.dumps(self._history_rows(claims, members))  # type: ignore[arg-type]
        x = self.feature_set.matrix(claims)
        scores = self.forest.anomaly_scores(x).tolist()
        threshold, ref = self.forest.threshold, self._ref_dict
        reasons = self.explainer.reason_fields_batch(x)
        # One comprehension, no per-row calls: this loop is the service's hot path.
        return orjson.dumps(
            [
                {
                    "schema_version": SCHEMA_VERSION,
                    "claim_id": claim.claim_id,
                    "anomaly_score": score,
                    "threshold": threshold,
                    "decision": "investigate" if score > threshold else "approve",
                    "model": ref,
                    "reasons": why,
                }
                for claim, score, why in zip(claims, scores, reasons, strict=True)
            ]
        )

    # -- the v2-history path: features from the claim, its codes and its member's history

    def _history_features(self, claims: Sequence[ClaimV2], members: Sequence[MemberFeatures]
                          ) -> tuple[list[tuple[tuple[float, ...], Evidence]], np.ndarray]:
        """Each claim's feature values and evidence, and the values as a matrix."""
        codes = self.codes
        assert codes is not None, "a stateful model is built with its code references"
        peers, recent = self.feature_set.peer_charges, self.feature_set.recent_providers
        vectors = [feature_vector(claim, member, codes, peers, recent)
                   for claim, member in zip(claims, members, strict=True)]
        return vectors, np.asarray([values for values, _ in vectors], dtype=np.float64)

    def _history_rows(self, claims: Sequence[ClaimV2],
                      members: Sequence[MemberFeatures]) -> list[dict[str, Any]]:
        vectors, x = self._history_features(claims, members)
        scores = self.forest.anomaly_scores(x).tolist()
        threshold, ref = self.forest.threshold, self._ref_dict
        tails = self.explainer.reason_fields_batch(x)
        rows = []
        for claim, (values, evidence), score, why in zip(claims, vectors, scores, tails,
                                                         strict=True):
            rule = is_resubmission(evidence)
            flagged = rule or score > threshold
            reasons = self._in_words(why, evidence, values if flagged else None)
            if rule:
                reasons = [self._rule_reason(evidence), *reasons][: max(1, len(reasons))]
            rows.append({
                "schema_version": SCHEMA_VERSION,
                "claim_id": claim.claim_id,
                "anomaly_score": score,
                "threshold": threshold,
                "decision": "investigate" if flagged else "approve",
                "model": ref,
                "reasons": reasons,
            })
        return rows

    def _in_words(self, reasons: list[dict[str, Any]], evidence: Evidence,
                  values: tuple[float, ...] | None) -> list[dict[str, Any]]:
        """The explainer's reasons in an investigator's words. A flagged claim (``values``
        given) with no feature in a tail still gets its most unusual feature."""
        explainer = self.explainer
        if not reasons and values is not None:
            reasons = self._most_unusual(values)
        worded = []
        for reason in reasons:
            j = self._index[reason["feature"]]
            level = explainer.high if reason["direction"] == "high" else explainer.low
            words = in_words(reason["feature"], reason["value"], reason["direction"],
                             explainer.value_at(j, level), f"{ordinal(level)}", evidence)
            worded.append(reason if words is None else {**reason, "message": words})
        return worded

    def _most_unusual(self, values: tuple[float, ...]) -> list[dict[str, Any]]:
        explainer = self.explainer
        pcts = [explainer.percentile(j, v) if explainer.sides[j] != "low" else -1.0
                for j, v in enumerate(values)]
        j = max(range(len(values)), key=pcts.__getitem__)
        return [{"feature": explainer.features[j], "value": values[j],
                 "percentile": min(100.0, max(0.0, pcts[j])), "direction": "high",
                 "message": f"{explainer.features[j]} is this claim's most unusual feature",
                 "kind": "model"}]

    @staticmethod
    def _rule_reason(evidence: Evidence) -> dict[str, Any]:
        return {"feature": "resubmission", "value": evidence.duplicate_days_earlier,
                "percentile": 100.0, "direction": "high", "kind": "rule",
                "message": resubmission_words(evidence)}

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: j for j, name in enumerate(self.explainer.features)}

    def score_one_json(self, claim: AnyClaim, member: MemberFeatures | None = None) -> bytes:
        """One answer as JSON, through the single-claim fast paths."""
        if not self.feature_set.accepts(claim):
            return orjson.dumps(self._refusal(claim))
        if self.feature_set.stateful:
            return self.score_json([claim], None if member is None else [member])[1:-1]
        features = self.feature_set.row(claim)
        return orjson.dumps(
            self._row(
                claim.claim_id,
                self.forest.anomaly_score(features),
                self.explainer.reason_fields(features),
            )
        )

    def _row(self, claim_id: str, score: float, reasons: list[dict[str, Any]]) -> dict[str, Any]:
        threshold = self.forest.threshold
        return {
            "schema_version": SCHEMA_VERSION,
            "claim_id": claim_id,
            "anomaly_score": score,
            "threshold": threshold,
            "decision": "investigate" if score > threshold else "approve",
            "model": self._ref_dict,
            "reasons": reasons,
        }

    def _refusal(self, claim: AnyClaim) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "claim_id": claim.claim_id,
            "error_kind": "unsupported_version",
            "error": mismatch_message(self.feature_set, claim.schema_version),
            "model": self._ref_dict,
        }

    @cached_property
    def _ref_dict(self) -> dict[str, Any]:
        return self.ref.model_dump()


def build_served_model(
    estimator: Any,
    reference: FeatureReference,
    ref: ModelRef,
    tag: str,
    settings: ReasonSettings,
    threshold: float | None = None,
) -> ServedModel:
    """Compile a fitted model of either family and its feature reference (pure, no I/O).

    An Isolation Forest carries its threshold (``-offset_``); a classifier's was chosen at
    training time and is stored with the export, so it must be given.
    """
    try:
        features = feature_set(reference.feature_set)
    except FeatureSetError as exc:  # a model from a newer trainer than this service
        raise ModelLoadError(f"{tag}: {exc}") from exc
    if reference.features != list(features.features):
        raise ModelLoadError(
            f"{tag}: its reference lists features {reference.features}, feature set "
            f"{features.name} has {list(features.features)}"
        )
    if features.stateful and reference.codes is None:
        raise ModelLoadError(f"{tag}: feature set {features.name} needs code references; "
                             "its reference has none")
    scorer, family = _scorer(estimator, tag, threshold)
    return ServedModel(
        ref=ref,
        tag=tag,
        forest=scorer,
        feature_set=features,
        family=family,
        explainer=Explainer.from_reference(
            reference,
            features.features,
            high=settings.reason_high_percentile,
            low=settings.reason_low_percentile,
            max_reasons=settings.max_reasons,
            sides=SIDES if features.stateful else None,
        ),
        codes=reference.codes,
    )


def _scorer(estimator: Any, tag: str, threshold: float | None) -> tuple[Scorer, str]:
    try:
        family = family_of(estimator)
        if family == GRADIENT_BOOSTING:
            if threshold is None:
                raise ValueError("a classifier needs the threshold chosen at training time; "
                                 "its export has none")
            return classifier_scorer(estimator, threshold), family
    except ValueError as exc:
        raise ModelLoadError(f"{tag}: {exc}") from exc
    return compile_forest(estimator), family


# ---------------------------------------------------------------------------------------
# Which model to serve


@dataclass(frozen=True)
class Wanted:
    """The model that should be served now."""

    tag: str
    version: str | None  # registry version, when resolved through the registry
    run_id: str | None


class ModelSource(Protocol):
    def wanted(self) -> Wanted: ...


class RegistrySource:
    """``<name>@<alias>`` in the MLflow registry -> BentoML tag ``<name>:v<version>``."""

    def __init__(self, tracking_uri: str, name: str, alias: str) -> None:
        self.tracking_uri = tracking_uri
        self.name = name
        self.alias = alias
        self._client: MlflowClient | None = None

    def wanted(self) -> Wanted:
        from modelstore.bento import bento_tag
        from modelstore.registry import RegistryError, client_for, version_for_alias

        if self._client is None:  # one client: building it migrates/opens the store
            self._client = client_for(self.tracking_uri)
        try:
            version, run_id = version_for_alias(self._client, self.alias, self.name)
        except RegistryError as exc:  # the only error of version_for_alias
            raise AliasMissing(str(exc)) from exc
        return Wanted(tag=bento_tag(version, self.name), version=version, run_id=run_id or None)


@dataclass(frozen=True)
class PinnedSource:
    """Always the same BentoML tag (e.g. a model bundled into a Bento)."""

    tag: str

    def wanted(self) -> Wanted:
        return Wanted(tag=self.tag, version=None, run_id=None)


def load_served_model(wanted: Wanted, bentoml_home: Path, settings: ReasonSettings
                      ) -> ServedModel:
    """Load ``wanted.tag`` from the BentoML store and compile it."""
    from bentoml.exceptions import NotFound

    from modelstore.bento import load_exported

    try:
        exported = load_exported(wanted.tag, bentoml_home)
    except NotFound as exc:
        raise ModelLoadError(
            f"BentoML model {wanted.tag} is not in the store at {bentoml_home} "
            "(promote exports it: `claimflow promote`)"
        ) from exc
    labels = exported.labels
    version = labels.get("registry_version") or str(exported.tag).rpartition(":v")[2]
    if wanted.version is not None and version != wanted.version:
        raise ModelLoadError(
            f"BentoML model {wanted.tag} is labelled registry version {version!r}, "
            f"not {wanted.version!r}"
        )
    run_id = labels.get("run_id") or wanted.run_id
    if wanted.run_id and run_id != wanted.run_id:
        raise ModelLoadError(
            f"BentoML model {wanted.tag} comes from run {run_id}, the registry says "
            f"{wanted.run_id} (promote the version again to re-export it)"
        )
    ref = ModelRef(
        name=labels.get("registry_name") or str(exported.tag).partition(":")[0],
        version=version,
        run_id=run_id,
    )
    threshold = exported.metadata.get("threshold")
    return build_served_model(exported.estimator, exported.reference, ref, exported.tag, settings,
                              None if threshold is None else float(threshold))
