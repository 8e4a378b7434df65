"""A background thread that runs consumer sessions until stopped, restarting after failures.

The gateway's two consumers (the reply path and the outcome view) subclass it: a session
(:meth:`RestartingThread._session`) is one consumer from open to close; it returns once
``stopping`` is set and raises on any failure. A failed session is logged and the next one
starts after a backoff that doubles up to its maximum, so a consumer never dies silently.
:meth:`fresh` tells readiness whether a session completed a poll recently.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer

logger = logging.getLogger(__name__)


class RestartingThread:
    """Runs :meth:`_session` in a daemon thread named ``name`` between :meth:`start` and
    :meth:`stop`; ``what`` names the consumer in log lines."""

    def __init__(self, name: str, what: str, backoff_s: tuple[float, float],
                 stale_after_s: float) -> None:
        self._name = name
        self._what = what
        self._backoff_min_s, self._backoff_max_s = backoff_s
        self._stale_after_s = stale_after_s
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_poll: float | None = None  # time.monotonic() of the last completed poll
        self.restarts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def polled(self) -> None:
        """A session completed a poll."""
        self._last_poll = time.monotonic()

    def fresh(self) -> bool:
        """The thread runs and a session completed a poll within ``stale_after_s``."""
        last = self._last_poll
        return (self._thread is not None and self._thread.is_alive() and last is not None
                and time.monotonic() - last < self._stale_after_s)

    def _session(self) -> None:
        """One consumer from open to close: returns when stopping, raises on failure."""
        raise NotImplementedError

    def _run(self) -> None:
        backoff = self._backoff_min_s
        while not self.stopping.is_set():
            try:
                self._session()
            except Exception:  # any failure: restart, never die silently
                self.restarts += 1
                self._last_poll = None
                logger.exception("%s failed; restarting in %.1f s", self._what, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)
            else:
                return


def close_quietly(consumer: Consumer, what: str) -> None:
    """Close a session's consumer; a failed consumer may fail to close too, which is logged."""
    try:
        consumer.close()
    except Exception:
        logger.warning("%s: closing the consumer failed", what, exc_info=True)
