"""The gateway's memory of what it decided: one row per submitted claim_id (SQLite).

A row is written *before* its decision is published (``published = 0``) and marked once the
broker confirmed delivery. A resubmission of a claim whose publication was never confirmed
publishes the stored decision again instead of scoring anew, so a client that retries after
a 503 gets the decision that is (or will be) on the topic. The file lives under
CLAIMFLOW_HOME, so idempotency survives restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.sqlite_util import BackgroundCheckpointer, connect
from schemas import Decision

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    claim_id     TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    decision     BLOB NOT NULL,
    published    INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL
) WITHOUT ROWID;
"""
# SQLite's default limit of host parameters per statement is 32766; stay well below.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    claim_id: str
    fingerprint: str
    decision_json: bytes
    published: bool

    def decision(self) -> Decision:
        return Decision.from_json(self.decision_json)


class SubmissionStore:
    """Thread-safe: one connection behind a lock (every statement here is sub-millisecond)."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._conn = connect(path, synchronous, autocheckpoint=False)
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._checkpointer = BackgroundCheckpointer(path, synchronous)

    def get_many(self, claim_ids: Iterable[str]) -> dict[str, StoredSubmission]:
        ids = list(dict.fromkeys(claim_ids))
        found: dict[str, StoredSubmission] = {}
        with self._lock:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
                sql = f"SELECT claim_id, fingerprint, decision, published FROM submissions WHERE claim_id IN ({marks})"  # noqa: E501, S608
                rows = self._conn.execute(sql, chunk).fetchall()
                for claim_id, fp, decision, published in rows:
                    found[claim_id] = StoredSubmission(claim_id, fp, bytes(decision),
                                                       bool(published))
        return found

    def get(self, claim_id: str) -> StoredSubmission | None:
        return self.get_many([claim_id]).get(claim_id)

    def add_pending(self, rows: Sequence[tuple[str, str, bytes]], now_ms: int) -> None:
        """Insert (claim_id, fingerprint, decision JSON) rows not yet published."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO submissions (claim_id, fingerprint, decision, published, "
                    "created_ms) VALUES (?, ?, ?, 0, ?)",
                    [(cid, fp, decision, now_ms) for cid, fp, decision in rows],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def mark_published(self, claim_ids: Sequence[str]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "UPDATE submissions SET published = 1 WHERE claim_id = ?",
                    [(cid,) for cid in claim_ids],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT count(*) FROM submissions").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        self._checkpointer.close()

    def __enter__(self) -> SubmissionStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
