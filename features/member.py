"""Per-member history and the features it gives a new claim of that member.

The state keeps a short, bounded record of the member's earlier claims (what the features
need, nothing more) in the order they were seen. "Earlier" is stream order for the member's
key: every claim of one member is on one partition, so the order is the producer's.
Windows are counted in days of service date, relative to the new claim's service date.

The same record answers "was this claim_id seen before?" (:func:`repeat_of`): the stream
decides a claim_id once per member, for as long as the member's state keeps that claim's
fingerprint (``DUPLICATE_LOOKBACK_DAYS`` of service date behind the member's latest claim,
at most ``MAX_FINGERPRINTS`` claims).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Generic, Literal, NamedTuple, TypeVar

import orjson

from schemas import ClaimV2

WINDOW_DAYS: Final = 30  # the widest window; member_features relies on it exceeding 7
# A member with more claims than this inside the window is extreme already; the oldest go.
MAX_REMEMBERED: Final = 200
# Exact resubmissions are looked for this far back (a payer's usual resubmission horizon).
DUPLICATE_LOOKBACK_DAYS: Final = 365
MAX_FINGERPRINTS: Final = 400


class PastClaim(NamedTuple):
    """What the member's state keeps of one earlier claim."""

    claim_id: str
    provider_id: str
    service_day: int  # date ordinal
    submitted_s: float  # epoch seconds


class Fingerprint(NamedTuple):
    """An earlier claim's identity: its content for resubmission checks (``digest``), its
    claim_id and whole payload for claim-id checks (``payload``; "" when restored from a
    format-1 record, which did not keep it)."""

    digest: str
    claim_id: str
    service_day: int
    submitted_s: float
    payload: str = ""


class Repeat(NamedTuple):
    """A claim whose claim_id the member's history already holds: set aside, not scored."""

    kind: Literal["duplicate_claim_id", "claim_id_conflict"]
    reason: str


@dataclass(frozen=True)
class MemberHistory:
    """A member's state: recent claims (window) and fingerprints (duplicate lookback)."""

    recent: tuple[PastClaim, ...] = ()
    fingerprints: tuple[Fingerprint, ...] = ()
    latest_day: int = 0  # the latest service date seen (ordinal)

    def earlier(self, claim_id: str) -> Fingerprint | None:
        """The remembered claim with this claim_id, if any."""
        for remembered in self.fingerprints:  # a plain loop: half a generator's cost
            if remembered[1] == claim_id:
                return remembered
        return None


class MemberFeatures(NamedTuple):
    """Features of a new claim from its member's history (before the claim is added)."""

    claims_1d: float
    claims_7d: float
    claims_30d: float
    providers_30d: float  # distinct providers, the new claim's included
    # The same within 7 days: visits spread over providers within days. None only in a
    # context from a worker older than this feature (the model service's check refuses it).
    providers_7d: float | None
    days_since_previous: float  # -1 when the member has no earlier claim
    same_provider_same_day: float  # earlier claims, same provider and service date
    duplicate: float  # 1 when the same provider, date and lines were billed before
    duplicate_of: str | None  # that claim's id
    duplicate_days_earlier: float  # submitted this many days before (0 when no duplicate)


def fingerprint(claim: ClaimV2) -> str:
    """Same provider, service date and lines (order-insensitive, charges to the cent).
    A stable digest (not Python's per-process ``hash``), so state survives restarts."""
    lines = sorted(f"{line.procedure_code}|{line.units}|{round(line.charge * 100)}"
                   for line in claim.lines)
    text = "\n".join([claim.provider_id, claim.service_date.isoformat(), *lines])
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# Every ClaimV2 field and where payload_digest has it: the resubmission fingerprint covers
# provider_id, service_date and the lines (claim_amount and num_services are their sums,
# schema_version is 2), the state is the member's own (member_id), claim_id is what is
# looked up, and submitted_at is left out on purpose. A unit test fails when the contract
# gains a field, so the digest cannot silently miss one.
PAYLOAD_FIELDS: Final = {
    "via fingerprint": ("provider_id", "service_date", "lines", "claim_amount",
                        "num_services", "schema_version"),
    "own": ("provider_specialty", "place_of_service", "patient_age", "patient_sex",
            "diagnosis_codes"),
    "implied": ("member_id", "claim_id"),
    "left out": ("submitted_at",),
}


def payload_digest(claim: ClaimV2, digest: str | None = None) -> str:
    """The whole claim but ``submitted_at`` (when it was sent, which a retry may change: the
    gateway fills it in when the client leaves it out): two claims of a member with one
    claim_id and this digest are one claim sent twice. ``digest``: the claim's
    :func:`fingerprint`, when the caller has it already. (Built from the fields, not from
    ``model_dump_json``: a third of the cost.)"""
    text = "\x1f".join((digest or fingerprint(claim), str(claim.provider_specialty),
                        str(claim.place_of_service), str(claim.patient_age), claim.patient_sex,
                        *claim.diagnosis_codes))
    # 8 bytes are plenty: only claims under one claim_id of one member are ever compared.
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def repeat_of(claim: ClaimV2, history: MemberHistory, digest: str, payload: str
              ) -> Repeat | None:
    """Whether ``claim``'s claim_id was seen before in the member's history, and as what.
    ``digest``/``payload``: the claim's :func:`fingerprint` and :func:`payload_digest`."""
    seen = history.earlier(claim.claim_id)
    if seen is None:
        return None
    first = datetime.fromtimestamp(seen.submitted_s, UTC).isoformat()
    # A format-1 record kept no payload digest: the resubmission fingerprint decides.
    same = seen.payload == payload if seen.payload else seen.digest == digest
    if same:
        return Repeat("duplicate_claim_id", (
            f"claim_id {claim.claim_id!r} was already read with the same claim (first "
            f"submitted {first}); it is decided once: not scored again, not counted again "
            "in the member's history"))
    return Repeat("claim_id_conflict", (
        f"claim_id {claim.claim_id!r} was already used by another claim of this member "
        f"(first submitted {first}); this claim is not scored: send it under a new claim_id"))


def member_features(claim: ClaimV2, history: MemberHistory, digest: str | None = None
                    ) -> MemberFeatures:
    """``digest``: the claim's :func:`fingerprint`, when the caller has it already.

    One pass over the recent claims: the worker runs this for every claim, and a pass per
    window (generators, a set comprehension, ``max``) cost about twice as much in process.
    The windows nest (1 < 7 < ``WINDOW_DAYS`` days), so each count is taken inside the
    wider one's test."""
    day = claim.service_date.toordinal()
    provider = claim.provider_id
    in_1d = in_7d = in_window = same_day = 0
    providers = {provider}
    providers_7d = {provider}
    previous = 0  # the latest earlier service day (date ordinals start at 1)
    for past in history.recent:
        past_day = past.service_day
        distance = abs(day - past_day)
        if distance < WINDOW_DAYS:
            in_window += 1
            providers.add(past.provider_id)
            if distance < 7:
                in_7d += 1
                providers_7d.add(past.provider_id)
                if distance == 0:
                    in_1d += 1
                    same_day += past.provider_id == provider
        if previous < past_day <= day:
            previous = past_day
    digest = digest or fingerprint(claim)
    match = None
    for remembered in reversed(history.fingerprints):  # the latest with this content
        if remembered.digest == digest:
            match = remembered
            break
    return MemberFeatures(
        claims_1d=in_1d + 1.0,
        claims_7d=in_7d + 1.0,
        claims_30d=in_window + 1.0,
        providers_30d=float(len(providers)),
        providers_7d=float(len(providers_7d)),
        days_since_previous=-1.0 if previous == 0 else float(day - previous),
        same_provider_same_day=float(same_day),
        duplicate=0.0 if match is None else 1.0,
        duplicate_of=None if match is None else match.claim_id,
        duplicate_days_earlier=0.0 if match is None else max(
            0.0, (claim.submitted_at.timestamp() - match.submitted_s) / 86_400.0),
    )


def remember(history: MemberHistory, claim: ClaimV2, digest: str | None = None,
             payload: str | None = None) -> MemberHistory:
    """The member's state after ``claim``. Entries are dropped once they are further than the
    windows behind the latest service date seen (claims may arrive out of date order).
    ``digest``/``payload``: the claim's :func:`fingerprint` and :func:`payload_digest`."""
    day = claim.service_date.toordinal()
    submitted = claim.submitted_at.timestamp()
    latest = max(day, history.latest_day)
    recent = tuple(p for p in history.recent if latest - p.service_day < WINDOW_DAYS)
    if latest - day < WINDOW_DAYS:
        recent = (*recent, PastClaim(claim.claim_id, claim.provider_id, day, submitted))
    kept = tuple(f for f in history.fingerprints
                 if latest - f.service_day < DUPLICATE_LOOKBACK_DAYS)
    digest = digest or fingerprint(claim)
    kept = (*kept, Fingerprint(digest, claim.claim_id, day, submitted,
                               payload or payload_digest(claim, digest)))
    return MemberHistory(recent=recent[-MAX_REMEMBERED:], fingerprints=kept[-MAX_FINGERPRINTS:],
                         latest_day=latest)


# -- a batch of claims through their members' histories: the stream's member stage and
# score-file both run this, so offline and online cannot drift apart

# What a claim without member features sends in a stateful batch: v1 claims (the model
# refuses them) and repeated claim_ids (set aside, never scored) get this placeholder.
NO_HISTORY: Final = MemberFeatures(1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, None, 0.0)

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class HistoryStep(Generic[Key]):
    """A batch's member features (one per claim, in order), the members' histories after
    it and the claims set aside as repeats of a claim_id (by index in the batch)."""

    features: list[MemberFeatures]
    updates: dict[Key, MemberHistory]
    repeats: dict[int, Repeat]


def step_histories(claims: Sequence[object], keys: Sequence[Key | None],
                   history_of: Callable[[Key], MemberHistory]) -> HistoryStep[Key]:
    """Each v2 claim's features from its member's history before it (claims of one member
    in the batch see each other in order). ``keys``: each claim's member key, None for a
    claim without a member; ``history_of``: a member's history before the batch. A claim
    whose claim_id the history holds already is a repeat: no features, not remembered."""
    updates: dict[Key, MemberHistory] = {}
    features: list[MemberFeatures] = []
    repeats: dict[int, Repeat] = {}
    for index, (claim, key) in enumerate(zip(claims, keys, strict=True)):
        if key is None or not isinstance(claim, ClaimV2):
            features.append(NO_HISTORY)
            continue
        history = updates.get(key)
        if history is None:
            history = history_of(key)
        digest = fingerprint(claim)
        payload = payload_digest(claim, digest)
        repeat = repeat_of(claim, history, digest, payload) if history.fingerprints else None
        if repeat is not None:
            repeats[index] = repeat
            features.append(NO_HISTORY)
            continue
        features.append(member_features(claim, history, digest))
        updates[key] = remember(history, claim, digest, payload)
    return HistoryStep(features, updates, repeats)


# -- the state as bytes (changelog records): compact, stable across processes and versions

# 2: fingerprints carry the payload digest (claim-id checks). Format-1 records still decode.
STATE_FORMAT: Final = 2
READABLE_FORMATS: Final = frozenset({1, STATE_FORMAT})


def encode_history(history: MemberHistory) -> bytes:
    """The changelog record of a member's state (JSON arrays, no field names)."""
    return orjson.dumps([
        STATE_FORMAT,
        history.latest_day,
        [list(past) for past in history.recent],
        [list(f) for f in history.fingerprints],
    ])


def decode_history(data: bytes) -> MemberHistory:
    """The inverse of :func:`encode_history`; raises ``ValueError`` for another format."""
    fmt, latest, recent, prints = orjson.loads(data)
    if fmt not in READABLE_FORMATS:
        raise ValueError(f"member state format {fmt!r}, this code reads "
                         f"{sorted(READABLE_FORMATS)}")
    return MemberHistory(
        recent=tuple(PastClaim(*past) for past in recent),
        fingerprints=tuple(Fingerprint(*f) for f in prints),
        latest_day=latest,
    )
