"""Submitting claims: idempotency check, scoring, durable record, confirmed publication.

The order matters. For claims never seen before: score -> record the decision as pending
-> publish and wait for the broker -> mark published. A claim_id already recorded with the
same fingerprint returns its first decision (republished only if its publication was never
confirmed); with a different fingerprint it is a conflict.

The model call happens *before* the claim_id lock (:mod:`gateway.locks`, across worker
processes too) is taken: under the lock the store is read again, and only claims still
unknown are recorded with the new decision. A claim decided meanwhile by a concurrent
request keeps that first decision (this request's score is dropped, a wasted model call in a
race, never a second decision). The lock spans record -> publish -> mark, so two concurrent
submissions cannot both publish. Before, a 500-claim batch held its locks through the model
call as well, blocking every submission that shared a stripe for its whole duration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from gateway.idempotency import StoredSubmission, SubmissionStore
from gateway.intake import Intake
from gateway.locks import KeyLocks
from gateway.publisher import DecisionPublisher, Outgoing
from schemas import (
    Claim,
    ClaimV2,
    Decision,
    DecisionKind,
    GatewaySource,
    ScoreAnswer,
    ScoreRefusal,
    ScoreResult,
)

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """What the gateway needs from the model service (``scorer.client.ModelClient``)."""

    def score(self, claim: Claim | ClaimV2) -> ScoreAnswer: ...

    def score_batch(self, claims: Sequence[Claim | ClaimV2]) -> list[ScoreAnswer]: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


class ClaimConflictError(Exception):
    """claim_ids already decided for a different payload."""

    def __init__(self, claim_ids: Sequence[str]) -> None:
        self.claim_ids = list(claim_ids)
        super().__init__(f"claim_id already used for a different claim: {', '.join(claim_ids)}")


class UnsupportedVersionError(Exception):
    """The served model reads another claim contract version than these claims (a 422:
    the claim is valid, but no decision today's model makes would mean anything)."""

    def __init__(self, refusals: dict[str, str]) -> None:
        self.refusals = refusals  # claim_id -> the model's reason
        super().__init__("; ".join(refusals.values()))


class ScoringMismatchError(Exception):
    """The model service answered for a different claim than it was asked about (a bug)."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """The outcome for one submitted claim. ``decision`` is None only for a conflict that the
    caller asked to be reported rather than raised."""

    claim_id: str
    decision: Decision | None
    replayed: bool
    conflict: bool = False


def build_decision(
    claim: Claim | ClaimV2, result: ScoreResult, decided_at: datetime, request_id: str | None
) -> Decision:
    if result.claim_id != claim.claim_id:
        raise ScoringMismatchError(f"asked about {claim.claim_id}, answer is for {result.claim_id}")
    return Decision.from_score(
        claim, result, decided_at=decided_at, source=GatewaySource(request_id=request_id)
    )


OnConflict = Literal["raise", "report"]


class SubmissionService:
    def __init__(
        self,
        scorer: Scorer,
        publisher: DecisionPublisher,
        store: SubmissionStore,
        topic_for: Callable[[DecisionKind], str],
        publish_timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        locks: KeyLocks | None = None,
    ) -> None:
        self.scorer = scorer
        self.publisher = publisher
        self.store = store
        self._topic_for = topic_for
        self._publish_timeout_s = publish_timeout_s
        self._clock = clock
        self.locks = locks or KeyLocks()

    def submit(
        self, intakes: Sequence[Intake], request_id: str | None, on_conflict: OnConflict = "raise"
    ) -> list[Submitted]:
        """Decide every claim (in order).

        Raises ``ModelUnavailable`` / ``PublishUnavailable`` (nothing confirmed; the client
        retries) and :class:`ClaimConflictError` when ``on_conflict="raise"``.
        """
        first: dict[str, Intake] = {}
        for intake in intakes:
            first.setdefault(intake.claim_id, intake)
        unique = list(first.values())
        ids = [intake.claim_id for intake in unique]
        hint = self.store.get_many(ids)  # unlocked: decides what to score, nothing more
        conflicts = self._conflicts(unique, hint)
        if conflicts and on_conflict == "raise":
            raise ClaimConflictError(conflicts)
        if len(hint) == len(unique) and all(s.published for s in hint.values()):
            return self._answers(intakes, hint, [], set(conflicts))  # pure replay: no lock
        fresh = [i for i in unique if i.claim_id not in hint]
        scored = self._score(fresh, request_id)  # the slow part, outside the lock
        with self.locks.hold(ids):
            known = self.store.get_many(ids)  # authoritative under the lock
            conflicts = self._conflicts(unique, known)
            if conflicts and on_conflict == "raise":
                raise ClaimConflictError(conflicts)
            decided = self._record(fresh, scored, known)
            unconfirmed = [s.decision() for s in known.values()
                           if not s.published and s.claim_id not in conflicts]
            self._publish([*decided, *unconfirmed])
        return self._answers(intakes, known, decided, set(conflicts))

    @staticmethod
    def _conflicts(unique: Sequence[Intake], known: dict[str, StoredSubmission]) -> list[str]:
        return [i.claim_id for i in unique
                if i.claim_id in known and known[i.claim_id].fingerprint != i.fingerprint]

    def _record(self, fresh: Sequence[Intake], scored: Sequence[Decision],
                known: dict[str, StoredSubmission]) -> list[Decision]:
        """Record as pending the decisions of claims nobody decided meanwhile."""
        rows = [(i, d) for i, d in zip(fresh, scored, strict=True) if i.claim_id not in known]
        if rows:
            now_ms = int(self._clock().timestamp() * 1000)
            self.store.add_pending([(d.claim_id, i.fingerprint, d.to_json()) for i, d in rows],
                                   now_ms)
        return [d for _, d in rows]

    def lookup(self, claim_id: str) -> StoredSubmission | None:
        return self.store.get(claim_id)

    def _score(self, fresh: Sequence[Intake], request_id: str | None) -> list[Decision]:
        if not fresh:
            return []
        claims = [intake.claim for intake in fresh]
        if len(claims) == 1:
            results = [self.scorer.score(claims[0])]
        else:
            results = self.scorer.score_batch(claims)
        refusals = {r.claim_id: r.error for r in results if isinstance(r, ScoreRefusal)}
        if refusals:  # before anything is recorded: nothing to replay, nothing published
            raise UnsupportedVersionError(refusals)
        decided_at = self._clock()
        return [build_decision(claim, result, decided_at, request_id)  # type: ignore[arg-type]
                for claim, result in zip(claims, results, strict=True)]

    def _publish(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        outgoing = [Outgoing(self._topic_for(d.decision), d) for d in decisions]
        self.publisher.publish(outgoing, self._publish_timeout_s)
        self.store.mark_published([d.claim_id for d in decisions])
        for decision in decisions:
            logger.debug("claim_id=%s decided %s", decision.claim_id, decision.decision)

    @staticmethod
    def _answers(
        intakes: Sequence[Intake],
        known: dict[str, StoredSubmission],
        decided: Sequence[Decision],
        conflicts: set[str],
    ) -> list[Submitted]:
        new = {d.claim_id: d for d in decided}
        cache: dict[str, Decision] = {}
        out = []
        for intake in intakes:
            cid = intake.claim_id
            if cid in conflicts:
                out.append(Submitted(cid, None, replayed=False, conflict=True))
            elif cid in new:
                out.append(Submitted(cid, new[cid], replayed=False))
            else:
                if cid not in cache:
                    cache[cid] = known[cid].decision()
                out.append(Submitted(cid, cache[cid], replayed=True))
        return out
