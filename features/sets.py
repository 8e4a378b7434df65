"""Named feature sets: which numbers a model sees, computed from one claim alone.

The one place that turns claims into model inputs. The trainer builds its training matrix
with it and the model service builds each request's matrix with it, so the features
cannot differ between offline and online. Pure functions; numpy and the contracts only
(the model service imports this module).

A feature set belongs to one claim contract version: ``v1`` reads the lab's five numbers
of a version-1 ``Claim``; ``v2-claim`` reads claim-level numbers of a version-2 ``ClaimV2``
(no identifiers, no codes as numbers: a provider id or a procedure code is a label, and a
forest splitting on its numeric value would learn the order of an id scheme).
``v2-history`` adds each claim's codes against references learned in training and its
member's history before it (:mod:`features.vector`): its values need state, so it has no
``row`` of one claim; the stream's member stage and ``replay`` supply the history.
``v2-peers`` is ``v2-history`` plus the claim's charges against its provider's specialty
peers. ``v2-velocity`` (the default for v2 claims) is ``v2-peers`` with the member's distinct
providers counted within 7 days instead of 30.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from features.vector import HISTORY_FEATURES, PEER_FEATURES, VELOCITY_FEATURES
from schemas import CLAIM_FEATURES, Claim, ClaimV2

FloatMatrix = npt.NDArray[np.float64]

V2_CLAIM_FEATURES: Final = (
    "claim_amount",
    "num_services",
    "num_lines",
    "num_diagnoses",
    "patient_age",
    "max_unit_charge",
    "amount_per_service",
)


class FeatureSetError(ValueError):
    """An unknown feature set, or a claim of another contract version than the set reads."""


@dataclass(frozen=True)
class FeatureSet:
    """A named, ordered list of features and how to read them from a claim."""

    name: str
    claim_version: int
    features: tuple[str, ...]
    row: Callable[[Any], tuple[float, ...]]  # one claim -> its values in ``features`` order
    # True: the values need the member's earlier claims and code references (v2-history).
    stateful: bool = False
    # True: also the claim's charges against its provider's specialty peers (v2-peers).
    peer_charges: bool = False
    # True: the member's distinct providers within 7 days, not 30 (v2-velocity).
    recent_providers: bool = False

    def accepts(self, claim: Claim | ClaimV2) -> bool:
        return claim.schema_version == self.claim_version

    def matrix(self, claims: Sequence[Any]) -> FloatMatrix:
        """(claims, features) float64; every claim must be of :attr:`claim_version`."""
        if not claims:
            return np.empty((0, len(self.features)), dtype=np.float64)
        return np.array(list(map(self.row, claims)), dtype=np.float64)

    def values(self, claim: Claim | ClaimV2) -> tuple[float, ...]:
        """One claim's features; raises :class:`FeatureSetError` for another version."""
        if not self.accepts(claim):
            raise FeatureSetError(mismatch_message(self, claim.schema_version))
        return self.row(claim)


def v2_claim_row(claim: ClaimV2) -> tuple[float, ...]:
    """The ``v2-claim`` values of one claim (:data:`V2_CLAIM_FEATURES` order)."""
    lines = claim.lines
    return (
        claim.claim_amount,
        float(claim.num_services),
        float(len(lines)),
        float(len(claim.diagnosis_codes)),
        float(claim.patient_age),
        max(line.charge / line.units for line in lines),
        claim.claim_amount / claim.num_services,
    )


def _needs_history(claim: ClaimV2) -> tuple[float, ...]:
    raise FeatureSetError(
        f"claim {claim.claim_id}: feature sets v2-history, v2-peers and v2-velocity need the "
        "member's history "
        "(the stream's member stage or `claimflow score-file` computes it)"
    )


V1: Final = FeatureSet(
    name="v1",
    claim_version=1,
    features=tuple(CLAIM_FEATURES),
    # attrgetter: the v1 hot path, 2x faster than Claim.features() + float() per value.
    row=operator.attrgetter(*CLAIM_FEATURES),
)
V2_CLAIM: Final = FeatureSet(
    name="v2-claim", claim_version=2, features=V2_CLAIM_FEATURES, row=v2_claim_row
)
V2_HISTORY: Final = FeatureSet(
    name="v2-history", claim_version=2, features=HISTORY_FEATURES, row=_needs_history,
    stateful=True,
)
V2_PEERS: Final = FeatureSet(
    name="v2-peers", claim_version=2, features=PEER_FEATURES, row=_needs_history,
    stateful=True, peer_charges=True,
)
V2_VELOCITY: Final = FeatureSet(
    name="v2-velocity", claim_version=2, features=VELOCITY_FEATURES, row=_needs_history,
    stateful=True, peer_charges=True, recent_providers=True,
)
FEATURE_SETS: Final = {fs.name: fs for fs in (V1, V2_CLAIM, V2_HISTORY, V2_PEERS, V2_VELOCITY)}
# The set a new model is trained with, per claim version of its training data.
DEFAULT_FOR_VERSION: Final = {1: V1, 2: V2_VELOCITY}


def feature_set(name: str) -> FeatureSet:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        known = ", ".join(FEATURE_SETS)
        raise FeatureSetError(f"unknown feature set {name!r} (known: {known})") from None


def for_claim_version(version: int) -> FeatureSet:
    try:
        return DEFAULT_FOR_VERSION[version]
    except KeyError:
        raise FeatureSetError(f"no feature set reads claims of schema_version {version}") from None


def mismatch_message(fs: FeatureSet, claim_version: int) -> str:
    """The words both the dead letter and the gateway's 422 use."""
    return (
        f"the served model (feature set {fs.name}) scores claims of schema_version "
        f"{fs.claim_version}; this claim is schema_version {claim_version}"
    )
