"""Opening the gateway's SQLite files the same way everywhere."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer) shared across threads.

    ``isolation_level=None``: transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``)
    so that a write never starts as a read and then fails to upgrade its lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn
