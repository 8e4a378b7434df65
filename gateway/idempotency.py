"""The gateway's memory of what was submitted: one row per claim_id (SQLite).

A row is written *before* its claim is produced (no position yet), gets the claim's
position once the broker confirmed it, and the stream's decision once that arrived. So:

- a resubmission of a claim whose produce was never confirmed produces it again (the client
  that got a 503 retries; the claim was either never stored by the broker or, in the one
  window documented in docs/gateway.md, is stored twice: the stream worker decides it once
  and dead-letters the copy as ``duplicate_claim_id``);
- a resubmission of a claim produced but not yet decided waits for the same decision;
- a resubmission of a decided claim gets the stored decision at once;
- a different claim under a stored claim_id is a conflict.

A claim that the stream dead-lettered is forgotten (its row deleted): nothing was decided, so
the same claim_id may be submitted again, e.g. once a model that reads it is champion. Its
dead letter is kept (``set_aside``), also when it arrives after the request gave up (202), so
the claim's Location answers with the worker's reason. The file lives under CLAIMFLOW_HOME,
so idempotency survives restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.claim_producer import Position
from gateway.sqlite_util import BackgroundCheckpointer, connect

# A new table name: the previous design's ``submissions`` table held gateway-made decisions.
SCHEMA = """
CREATE TABLE IF NOT EXISTS submitted (
    claim_id     TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    topic        TEXT,
    partition    INTEGER,
    "offset"     INTEGER,
    decision     BLOB,
    created_ms   INTEGER NOT NULL
) WITHOUT ROWID;
-- A dead letter names its claim by position (the worker may not be able to read the claim).
CREATE INDEX IF NOT EXISTS submitted_position ON submitted (topic, partition, "offset");
-- The last dead letter of a claim_id submitted here: its Location answers with the reason.
CREATE TABLE IF NOT EXISTS set_aside (
    claim_id     TEXT PRIMARY KEY,
    letter       BLOB NOT NULL
) WITHOUT ROWID;
"""
# SQLite's default limit of host parameters per statement is 32766; stay well below.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class StoredSubmission:
    claim_id: str
    fingerprint: str
    position: Position | None  # None: the broker never confirmed the claim
    decision_json: bytes | None  # None: the stream's decision was not seen yet

    @property
    def produced(self) -> bool:
        return self.position is not None


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
                sql = ('SELECT claim_id, fingerprint, topic, partition, "offset", decision '  # noqa: S608
                       f"FROM submitted WHERE claim_id IN ({marks})")
                for cid, fp, topic, partition, offset, decision in \
                        self._conn.execute(sql, chunk).fetchall():
                    position = None if topic is None else Position(topic, partition, offset)
                    found[cid] = StoredSubmission(
                        cid, fp, position, None if decision is None else bytes(decision))
        return found

    def get(self, claim_id: str) -> StoredSubmission | None:
        return self.get_many([claim_id]).get(claim_id)

    def add_pending(self, rows: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Insert (claim_id, fingerprint) rows of claims about to be produced."""
        self._write("INSERT INTO submitted (claim_id, fingerprint, created_ms) VALUES (?, ?, ?)",
                    [(cid, fp, now_ms) for cid, fp in rows])

    def mark_produced(self, rows: Sequence[tuple[str, Position]]) -> None:
        self._write('UPDATE submitted SET topic = ?, partition = ?, "offset" = ? '
                    "WHERE claim_id = ?",
                    [(p.topic, p.partition, p.offset, cid) for cid, p in rows])

    def set_decisions(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """The stream's decisions (the first one seen stays)."""
        self._write("UPDATE submitted SET decision = ? WHERE claim_id = ? AND decision IS NULL",
                    [(body, cid) for cid, body in rows])

    def forget(self, claim_ids: Sequence[str]) -> None:
        """Undecided claims that the stream set aside (dead letter) or decided for another
        payload first: the id is free again, or belongs to the stream's claim."""
        self._write("DELETE FROM submitted WHERE claim_id = ? AND decision IS NULL",
                    [(cid,) for cid in claim_ids])

    def set_aside(self, claim_id: str, letter: bytes) -> None:
        """The claim was dead-lettered: forget it (if undecided) and keep the letter."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._set_aside(claim_id, letter)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def set_aside_at(self, position: Position, letter: bytes) -> str | None:
        """A dead letter for the claim produced at ``position``, whether or not a request
        still waits for it; the claim_id, or None when no undecided claim of this gateway
        was produced there (another producer's claim, or a worker process got here first)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    'SELECT claim_id FROM submitted WHERE topic = ? AND partition = ? AND '
                    '"offset" = ? AND decision IS NULL',
                    (position.topic, position.partition, position.offset)).fetchone()
                if row is not None:
                    self._set_aside(row[0], letter)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return None if row is None else str(row[0])

    def _set_aside(self, claim_id: str, letter: bytes) -> None:
        self._conn.execute("DELETE FROM submitted WHERE claim_id = ? AND decision IS NULL",
                           (claim_id,))
        self._conn.execute("INSERT OR REPLACE INTO set_aside (claim_id, letter) VALUES (?, ?)",
                           (claim_id, letter))

    def dead_letter(self, claim_id: str) -> bytes | None:
        """The last dead letter of a claim submitted here, if it was set aside."""
        with self._lock:
            row = self._conn.execute("SELECT letter FROM set_aside WHERE claim_id = ?",
                                     (claim_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(sql, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT count(*) FROM submitted").fetchone()
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
