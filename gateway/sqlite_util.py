"""Opening the gateway's SQLite files the same way everywhere."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)


def connect(path: Path, synchronous: str, autocheckpoint: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer) shared across threads.

    ``isolation_level=None``: transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``)
    so that a write never starts as a read and then fails to upgrade its lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")  # a BackgroundCheckpointer does it
    return conn


class BackgroundCheckpointer:
    """Moves a WAL file's pages into the database from a thread of its own.

    By default the commit that grows the WAL past 1,000 pages does the checkpoint itself: it
    copies the pages back and fsyncs, 5-15 ms here, while its request holds the store. With
    ``wal_autocheckpoint`` off on the writing connection and this thread checkpointing every
    ``interval_s`` (PASSIVE: it never blocks a writer or a reader), no request pays for it.
    """

    def __init__(self, path: Path, synchronous: str, interval_s: float = 1.0) -> None:
        self._path = path
        self._conn = connect(path, synchronous)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoint-{path.name}",
                                        daemon=True)
        self._thread.start()

    def checkpoint(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.checkpoint()
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # e.g. busy: the next round tries again
                logger.warning("WAL checkpoint of %s failed: %s", self._path, exc)
