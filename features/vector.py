"""The feature vector of a v2 claim: the claim itself, its codes against the references, and
its member's history. Identifiers are never features."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

from features.codes import CodeReference
from features.member import (
    MemberFeatures,
    MemberHistory,
    fingerprint,
    member_features,
    remember,
)
from schemas import ClaimV2

HISTORY_FEATURES: Final = (
    "log_amount",
    "num_lines",
    "num_services",
    "num_diagnoses",
    "max_charge_z",  # the line whose charge per unit is furthest above its code's norm
    "amount_vs_norm",  # log of the amount against what its lines usually cost
    "max_code_rarity",  # the line least typical for the patient's age band and sex
    "max_dx_rarity",  # the line least supported by any of the claim's diagnoses
    "claims_1d",
    "claims_7d",
    "claims_30d",
    "providers_30d",
    "days_since_previous",
    "same_provider_same_day",
)
# ``v2-peers``: the v2-history features and the claim's charges against its provider's
# specialty peers (the code references' per-specialty norms).
PEER_FEATURES: Final = (*HISTORY_FEATURES, "max_peer_charge_z")
# ``v2-velocity``: the v2-peers features with the member's distinct providers counted over 7
# days instead of 30. Doctor shopping and a shared card show as several providers within
# days; over 30 days that count mixes in a member's ordinary care (docs/detection.md).
VELOCITY_FEATURES: Final = tuple(
    "providers_7d" if name == "providers_30d" else name for name in PEER_FEATURES)
# An exact resubmission (same provider, service date and lines as an earlier claim of the
# member) filed at least this long after the original is decided by rule, not by the forest:
# a legitimate repeat of a service on one day arrives with the original, a resubmission
# weeks later is the duplicate-billing pattern whatever its amount.
RESUBMISSION_MIN_DAYS: Final = 1.0


class Evidence(NamedTuple):
    """What the reasons quote besides the feature values."""

    steepest_code: str | None  # the code behind max_charge_z
    steepest_ratio: float | None  # its charge per unit against the code's median
    rarest_code: str | None  # the code behind max_code_rarity
    duplicate_of: str | None
    duplicate_days_earlier: float
    unsupported_code: str | None = None  # the code behind max_dx_rarity
    peer_code: str | None = None  # the code behind max_peer_charge_z
    peer_ratio: float | None = None  # its charge per unit against the peers' median
    specialty: str | None = None  # the peers' specialty


class MissingContextError(ValueError):
    """A member context without a feature the model reads (from an older worker)."""


def feature_vector(claim: ClaimV2, member: MemberFeatures, codes: CodeReference,
                   peers: bool = False, recent_providers: bool = False
                   ) -> tuple[tuple[float, ...], Evidence]:
    """The ``v2-history`` values of ``claim`` (:data:`HISTORY_FEATURES` order); with
    ``peers``, the ``v2-peers`` ones (:data:`PEER_FEATURES`); with ``recent_providers`` as
    well, the ``v2-velocity`` ones (:data:`VELOCITY_FEATURES`)."""
    providers = member.providers_30d
    if recent_providers:
        if member.providers_7d is None:
            raise MissingContextError(
                f"claim {claim.claim_id}: the member context has no providers_7d (sent by a "
                "worker older than the v2-velocity feature set): upgrade the stream workers")
        providers = member.providers_7d
    steepest = _steepest_line(claim, codes)
    rarest = _rarest_line(claim, codes)
    unsupported = _least_supported_line(claim, codes)
    values: tuple[float, ...] = (
        math.log(claim.claim_amount),
        float(len(claim.lines)),
        float(claim.num_services),
        float(len(claim.diagnosis_codes)),
        steepest[1] if steepest else 0.0,
        _amount_vs_norm(claim, codes),
        rarest[1] if rarest else 0.0,
        unsupported[1] if unsupported else 0.0,
        member.claims_1d,
        member.claims_7d,
        member.claims_30d,
        providers,
        member.days_since_previous,
        member.same_provider_same_day,
    )
    peer = _steepest_peer_line(claim, codes) if peers else None
    if peers:
        values = (*values, peer[1] if peer else 0.0)
    evidence = Evidence(
        steepest_code=steepest[0] if steepest else None,
        steepest_ratio=steepest[2] if steepest else None,
        rarest_code=rarest[0] if rarest else None,
        duplicate_of=member.duplicate_of,
        duplicate_days_earlier=member.duplicate_days_earlier,
        unsupported_code=unsupported[0] if unsupported else None,
        peer_code=peer[0] if peer else None,
        peer_ratio=peer[2] if peer else None,
        specialty=claim.provider_specialty,
    )
    return values, evidence


def is_resubmission(evidence: Evidence) -> bool:
    """The hard rule: an exact duplicate of a claim filed at least a day earlier."""
    return (evidence.duplicate_of is not None
            and evidence.duplicate_days_earlier >= RESUBMISSION_MIN_DAYS)


def _steepest_line(claim: ClaimV2, codes: CodeReference) -> tuple[str, float, float] | None:
    best: tuple[str, float, float] | None = None
    for line in claim.lines:
        z = codes.charge_z(line.procedure_code, line.charge, line.units)
        ratio = codes.charge_ratio(line.procedure_code, line.charge, line.units)
        if z is not None and ratio is not None and (best is None or z > best[1]):
            best = (line.procedure_code, z, ratio)
    return best


def _steepest_peer_line(claim: ClaimV2, codes: CodeReference
                        ) -> tuple[str, float, float] | None:
    """The line whose charge per unit is furthest above its specialty peers' norm:
    (code, z, ratio to the peers' median)."""
    best: tuple[str, float, float] | None = None
    for line in claim.lines:
        found = codes.peer_charge_z(claim.provider_specialty, line.procedure_code,
                                    line.charge, line.units)
        if found is not None and (best is None or found[0] > best[1]):
            best = (line.procedure_code, found[0], found[1])
    return best


def _rarest_line(claim: ClaimV2, codes: CodeReference) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for line in claim.lines:
        rarity = codes.rarity(line.procedure_code, claim.patient_age, claim.patient_sex)
        if rarity is not None and (best is None or rarity > best[1]):
            best = (line.procedure_code, rarity)
    return best


def _least_supported_line(claim: ClaimV2, codes: CodeReference) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for line in claim.lines:
        rarity = codes.dx_rarity(line.procedure_code, claim.diagnosis_codes)
        if rarity is not None and (best is None or rarity > best[1]):
            best = (line.procedure_code, rarity)
    return best


def _amount_vs_norm(claim: ClaimV2, codes: CodeReference) -> float:
    """log(billed / usual) over the lines whose codes have a norm; 0 when none has."""
    billed = usual = 0.0
    for line in claim.lines:
        norm = codes.charge.get(line.procedure_code)
        if norm is not None:
            billed += line.charge
            usual += line.units * math.exp(norm.median_log)
    return math.log(billed / usual) if usual > 0 else 0.0


def replay(claims: Iterable[ClaimV2], codes: CodeReference, peers: bool = False,
           recent_providers: bool = False
           ) -> Iterator[tuple[ClaimV2, tuple[float, ...], Evidence]]:
    """Every claim's features in the given order, each from the history before it: what the
    stream computes claim by claim, for a file (training, ``score-file``). ``peers`` and
    ``recent_providers``: the ``v2-peers`` and ``v2-velocity`` values (see
    :func:`feature_vector`)."""
    histories: dict[str, MemberHistory] = {}
    for claim in claims:
        history = histories.get(claim.member_id, MemberHistory())
        digest = fingerprint(claim)
        values, evidence = feature_vector(claim, member_features(claim, history, digest), codes,
                                          peers, recent_providers)
        histories[claim.member_id] = remember(history, claim, digest)
        yield claim, values, evidence
