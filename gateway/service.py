"""Submitting claims: the stream decides, the gateway correlates.

The gateway makes no decision of its own. A claim never seen before is recorded (claim_id and
fingerprint), produced to the claims topic with the broker's confirmation, and answered with
the decision the stream worker publishes for it: the same features, member state and model
as every claim from the producer, and the claim becomes part of its member's history.

Identity is the claim_id, whichever path a claim came in on:

- recorded by this gateway with the same fingerprint: the first decision (a replay), or,
  still undecided, the same wait (nothing produced again, unless the broker never confirmed
  it: then it is produced again);
- decided on the stream without this gateway (in the outcome view) with the same claim: that
  decision, as a replay;
- either of them with a different claim: a conflict (409).

Only the record-and-produce step runs under the claim_id lock (:mod:`gateway.locks`, across
worker processes too), so two concurrent submissions cannot both produce a claim; the wait
for the decision holds no lock. A wait ends with the decision, a dead letter (the worker set
the claim aside: the model refused it; ``claim_id_conflict``: it read another claim under the
id first, a conflict; ``duplicate_claim_id`` answers nobody, the first copy's outcome does),
or the deadline (``pending``: the client polls). Every dead letter that names a claim
produced here is recorded, also after a 202, so the claim's Location gives its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from gateway.claim_producer import ClaimProducer, Position
from gateway.idempotency import StoredSubmission, SubmissionStore
from gateway.intake import Intake
from gateway.locks import KeyLocks
from gateway.outcome_store import OutcomeStore
from gateway.replies import ReplyBoard, Watch
from schemas import DeadLetter, Decision

logger = logging.getLogger(__name__)

# How often a waiting request also looks into the stores: a decision that went by before the
# request started watching (a replay of a claim in flight) is found there.
FALLBACK_POLL_S = 0.1


class ClaimConflictError(Exception):
    """claim_ids already used for a different payload (by a submission or on the stream)."""

    def __init__(self, claim_ids: Sequence[str]) -> None:
        self.claim_ids = list(claim_ids)
        super().__init__(f"claim_id already used for a different claim: {', '.join(claim_ids)}")


@dataclass(frozen=True, slots=True)
class Submitted:
    """The outcome for one submitted claim: a decision (``body`` is its JSON as the stream
    published it), a conflict, a dead letter, or ``pending`` (no answer by the deadline)."""

    claim_id: str
    decision: Decision | None
    replayed: bool
    conflict: bool = False
    body: bytes | None = None
    dead_letter: DeadLetter | None = None
    pending: bool = False


OnConflict = Literal["raise", "report"]


@dataclass
class _Work:
    """One submission's claims on their way: what is known, what is answered."""

    unique: list[Intake]
    known: dict[str, StoredSubmission]
    stream: dict[str, bytes]  # decided on the stream, never submitted here
    conflicts: set[str]
    answers: dict[str, Submitted]


class SubmissionService:
    def __init__(
        self,
        producer: ClaimProducer,
        store: SubmissionStore,
        outcomes: OutcomeStore,
        board: ReplyBoard,
        publish_timeout_s: float,
        decision_timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        locks: KeyLocks | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.producer = producer
        self.store = store
        self.outcomes = outcomes
        self.board = board
        self._publish_timeout_s = publish_timeout_s
        self.decision_timeout_s = decision_timeout_s
        self._clock = clock
        self._monotonic = monotonic
        self.locks = locks or KeyLocks()
        board.on_letter = self.record_dead_letter

    def submit(self, intakes: Sequence[Intake], on_conflict: OnConflict = "raise",
               timeout_s: float | None = None) -> list[Submitted]:
        """Every claim's outcome, in order. Raises ``PublishUnavailable`` (nothing confirmed;
        the client retries) and :class:`ClaimConflictError` when ``on_conflict="raise"``."""
        deadline = self._monotonic() + (self.decision_timeout_s if timeout_s is None
                                        else timeout_s)
        first: dict[str, Intake] = {}
        for intake in intakes:
            first.setdefault(intake.claim_id, intake)
        work = self._look_up(list(first.values()))
        self._raise_conflicts(work, on_conflict)
        watches = self.board.watch(i.claim_id for i in work.unique
                                   if i.claim_id not in work.answers)
        try:
            if watches:
                self._produce(work, watches, on_conflict)
                self._await(work, watches, deadline)
        finally:
            self.board.forget(watches.values())
        return [work.answers[intake.claim_id] for intake in intakes]

    def lookup(self, claim_id: str) -> StoredSubmission | None:
        return self.store.get(claim_id)

    def dead_letter(self, claim_id: str) -> DeadLetter | None:
        """The worker's dead letter of a claim submitted here, once it set the claim aside
        (also when that happened after the request was answered 202)."""
        letter = self.store.dead_letter(claim_id)
        return None if letter is None else DeadLetter.from_json(letter)

    def record_dead_letter(self, letter: DeadLetter) -> None:
        """A dead letter from the reply consumer: recorded when it names a claim this
        gateway produced and nothing decided (its request may have given up with a 202)."""
        src = letter.source
        claim_id = self.store.set_aside_at(Position(src.topic, src.partition, src.offset),
                                           letter.to_json())
        if claim_id is not None:
            logger.info("claim_id=%s set aside by the stream (%s): %s", claim_id,
                        letter.error_kind, letter.error)

    # -- steps ----------------------------------------------------------------------------

    def _look_up(self, unique: list[Intake]) -> _Work:
        ids = [i.claim_id for i in unique]
        known = self.store.get_many(ids)
        stream = self.outcomes.get_many(
            [cid for cid in ids if cid not in known or known[cid].decision_json is None])
        work = _Work(unique, known, stream, set(), {})
        for intake in unique:
            self._settle_known(work, intake)
        # Decided while nobody here waited (a 202 earlier): keep the decision with the record.
        self.store.set_decisions([(cid, r.body) for cid, r in work.answers.items()
                                  if r.body is not None and cid in known
                                  and known[cid].decision_json is None])
        return work

    def _settle_known(self, work: _Work, intake: Intake) -> None:
        """Answer ``intake`` from what is stored, if that answers it."""
        cid = intake.claim_id
        stored = work.known.get(cid)
        if stored is not None:
            if stored.fingerprint != intake.fingerprint:
                work.conflicts.add(cid)
                work.answers[cid] = Submitted(cid, None, replayed=False, conflict=True)
                return
            if stored.decision_json is not None:
                work.answers[cid] = replay(cid, stored.decision_json)
                return
        body = work.stream.get(cid)
        if body is not None:
            decision = Decision.from_json(body)
            if intake.same_claim(decision.claim):
                work.answers[cid] = Submitted(cid, decision, replayed=True, body=body)
            else:
                work.conflicts.add(cid)
                work.answers[cid] = Submitted(cid, None, replayed=False, conflict=True)

    @staticmethod
    def _raise_conflicts(work: _Work, on_conflict: OnConflict) -> None:
        if work.conflicts and on_conflict == "raise":
            raise ClaimConflictError(sorted(work.conflicts))

    def _produce(self, work: _Work, watches: dict[str, Watch], on_conflict: OnConflict) -> None:
        """Record and produce the claims nobody produced (or whose produce failed)."""
        wanted = [i for i in work.unique if i.claim_id in watches
                  and (i.claim_id not in work.known or not work.known[i.claim_id].produced)]
        for intake in work.unique:  # in flight already: its dead letter names its position
            stored = work.known.get(intake.claim_id)
            if intake.claim_id in watches and stored is not None and stored.position:
                self.board.locate(watches[intake.claim_id], stored.position)
        if not wanted:
            return
        ids = [i.claim_id for i in wanted]
        with self.locks.hold(ids):
            now = self.store.get_many(ids)  # authoritative under the lock
            work.known.update(now)
            for intake in wanted:
                self._settle_known(work, intake)
            self._raise_conflicts(work, on_conflict)
            fresh = [i for i in wanted if i.claim_id not in now]
            again = [i for i in wanted if i.claim_id in now and not now[i.claim_id].produced
                     and i.claim_id not in work.answers]
            for cid, stored in now.items():  # produced meanwhile by a concurrent request
                if stored.position is not None and cid not in work.answers:
                    self.board.locate(watches[cid], stored.position)
            if fresh:
                now_ms = int(self._clock().timestamp() * 1000)
                self.store.add_pending([(i.claim_id, i.fingerprint) for i in fresh], now_ms)
            outgoing = [*fresh, *again]
            if not outgoing:
                return
            positions = self.producer.produce([i.claim for i in outgoing],
                                              self._publish_timeout_s)
            rows = [(i.claim_id, p) for i, p in zip(outgoing, positions, strict=True)]
            self.store.mark_produced(rows)
        for cid, position in rows:
            self.board.locate(watches[cid], position)
            logger.debug("claim_id=%s produced to %s[%d]@%d", cid, position.topic,
                         position.partition, position.offset)

    def _await(self, work: _Work, watches: dict[str, Watch], deadline: float) -> None:
        """Wait for the answers of the watched claims until ``deadline``."""
        by_id = {i.claim_id: i for i in work.unique}
        open_ids = {cid for cid in watches if cid not in work.answers}
        wake = next(iter(watches.values())).wake
        next_fallback = self._monotonic() + FALLBACK_POLL_S
        while open_ids:
            wake.clear()
            decided: list[tuple[str, bytes]] = []
            for cid in list(open_ids):
                watch = watches[cid]
                if watch.answered:
                    open_ids.discard(cid)
                    self._answer(work, by_id[cid], watch.decision, watch.dead_letter, decided)
            now = self._monotonic()
            if open_ids and now >= next_fallback:
                found = self._stored_decisions(open_ids)
                for cid, body in found.items():
                    open_ids.discard(cid)
                    self._answer(work, by_id[cid], body, None, decided)
                next_fallback = now + FALLBACK_POLL_S
            self.store.set_decisions(decided)
            if not open_ids:
                break
            if now >= deadline:
                for cid in open_ids:
                    work.answers[cid] = Submitted(cid, None, replayed=False, pending=True)
                break
            wake.wait(min(deadline, next_fallback) - now)

    def _stored_decisions(self, claim_ids: set[str]) -> dict[str, bytes]:
        found = {cid: s.decision_json for cid, s in self.store.get_many(claim_ids).items()
                 if s.decision_json is not None}
        found.update(self.outcomes.get_many([cid for cid in claim_ids if cid not in found]))
        return found

    def _answer(self, work: _Work, intake: Intake, body: bytes | None,
                letter: DeadLetter | None, decided: list[tuple[str, bytes]]) -> None:
        cid = intake.claim_id
        if letter is not None:
            # The worker had read another claim under this id (it was in flight when this
            # one was checked here): the id is that claim's, as below for a decision.
            conflict = letter.error_kind == "claim_id_conflict"
            if conflict:
                self.store.forget([cid])
            else:
                self.store.set_aside(cid, letter.to_json())
            work.answers[cid] = Submitted(cid, None, replayed=False, conflict=conflict,
                                          dead_letter=None if conflict else letter)
            return
        assert body is not None
        decision = Decision.from_json(body)
        if not intake.same_claim(decision.claim):
            # The stream decided another claim under this id first (it was in flight when
            # this one was checked): the id is the stream's claim's now.
            self.store.forget([cid])
            work.answers[cid] = Submitted(cid, None, replayed=False, conflict=True)
            return
        decided.append((cid, body))
        stored = work.known.get(cid)
        replayed = stored is not None and stored.produced  # another request produced it
        work.answers[cid] = Submitted(cid, decision, replayed=replayed, body=body)


def replay(claim_id: str, body: bytes) -> Submitted:
    return Submitted(claim_id, Decision.from_json(body), replayed=True, body=body)
