"""Concurrent single-claim requests share model-service calls.

Each HTTP request scores one claim, and a model-service call costs about the same for one
claim as for fifty (HTTP and framework overhead on both sides). So request threads hand
their claim to a few caller threads, and each caller sends whatever has queued up while the
previous call was in flight as one ``score_batch``. Under load the batches grow by themselves
and the model service does a fraction of the calls.

When no model call is in flight, a request calls the service from its own thread: handing
the claim to a caller thread and the answer back costs two thread wake-ups (each a GIL
hand-off), which measured about 1 ms per request here, a fifth of the latency budget.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.service import Scorer
from schemas import Claim, ClaimV2, ScoreAnswer
from scorer.client import ModelUnavailable


@dataclass
class _Pending:
    claim: Claim | ClaimV2
    done: threading.Event = field(default_factory=threading.Event)
    result: ScoreAnswer | None = None
    error: BaseException | None = None


class CoalescingScorer:
    """A :class:`~gateway.service.Scorer` that batches concurrent ``score`` calls."""

    def __init__(self, inner: Scorer, max_batch: int = 64, callers: int = 2,
                 wait_timeout_s: float = 60.0) -> None:
        self.inner = inner
        self._max_batch = max_batch
        self._wait_timeout_s = wait_timeout_s
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        # One permit per concurrent model call, direct or batched: a direct call takes a
        # caller's place, so queued claims keep accumulating while it is in flight.
        self._permits = threading.Semaphore(callers)
        self._callers = [threading.Thread(target=self._run, name=f"model-caller-{i}",
                                          daemon=True) for i in range(callers)]
        for thread in self._callers:
            thread.start()

    def score(self, claim: Claim | ClaimV2) -> ScoreAnswer:
        if self._queue.empty() and self._permits.acquire(blocking=False):
            try:
                return self.inner.score(claim)
            finally:
                self._permits.release()
        pending = _Pending(claim)
        self._queue.put(pending)
        # The inner client has its own timeout; this bound only guards against a lost caller.
        if not pending.done.wait(self._wait_timeout_s):
            raise ModelUnavailable("no answer from the model-service callers")
        if pending.error is not None:
            # A fresh exception per request thread: one instance raised in many threads
            # would share (and garble) its traceback.
            raise type(pending.error)(*pending.error.args) from pending.error
        assert pending.result is not None
        return pending.result

    def score_batch(self, claims: Sequence[Claim | ClaimV2]) -> list[ScoreAnswer]:
        return self.inner.score_batch(claims)

    def ready(self) -> bool:
        return self.inner.ready()

    def close(self) -> None:
        for _ in self._callers:
            self._queue.put(None)
        for thread in self._callers:
            thread.join(10)
        self.inner.close()

    def _run(self) -> None:
        stop = False
        while not stop and (first := self._queue.get()) is not None:
            with self._permits:  # wait for a free call slot; the queue grows meanwhile
                batch, stop = self._drain(first)
                self._call(batch)

    def _drain(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus whatever queued up, and whether close() asked to stop."""
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _call(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                results = [self.inner.score(batch[0].claim)]
            else:
                results = self.inner.score_batch([p.claim for p in batch])
        except Exception as exc:  # handed to every waiting request, which raises it
            for pending in batch:
                pending.error = exc
                pending.done.set()
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
            pending.done.set()
