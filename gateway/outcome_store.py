"""The outcome view's store: decisions read from the outcome topics, in SQLite.

One row per claim_id (a replayed message finds its row and changes nothing). The consumer's
next offsets are stored in the same transaction as the rows they produced, and the consumer
starts from them: the view is exact after any crash, whatever the group's committed offsets.
Counters per decision/model version and per second are kept beside the rows so that the
page's frequent polling never scans the whole table.

Shadow records (``claims.shadow``: champion and challenger on one claim) are kept one row per
claim with running counts per model pair (:mod:`gateway.shadow_view`).

Investigators' labels (``claims.labels``) are kept beside the decisions, one row per claim_id:
a later label replaces the earlier one (later offset of the claim's partition, the same rule
as the compacted topic), in the same transaction as the positions. The queue joins them to
show each claim's latest disposition and which claims are still open.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from gateway.label_view import StoredLabel, create_tables, refresh_open, store_labels
from gateway.shadow_view import SHADOW_SCHEMA, shadow_summary, store_shadows
from gateway.sqlite_util import connect
from schemas import Decision, DecisionKind, ShadowScore

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    claim_id       TEXT NOT NULL UNIQUE,
    decision       TEXT NOT NULL,
    model_name     TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    decided_ms     INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    body           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_decision ON outcomes (decision, seq);
CREATE TABLE IF NOT EXISTS positions (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_counts (
    decision TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (decision, model_name, model_version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS second_counts (
    second INTEGER NOT NULL, decision TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (second, decision)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision read from ``topic[partition]@offset``; ``body`` is its JSON as published."""

    decision: Decision
    topic: str
    partition: int
    offset: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def rate(approve: int, investigate: int) -> dict[str, Any]:
    total = approve + investigate
    return {"approve": approve, "investigate": investigate, "total": total,
            "investigation_rate": investigate / total if total else None}


def timeline(
    rows: Sequence[tuple[int, str, int]], start_s: int, bucket_s: int, buckets: int
) -> list[dict[str, Any]]:
    """Per-bucket counts (oldest first) from ``(second, decision, n)`` rows (pure)."""
    counts = [Counter[str]() for _ in range(buckets)]
    for second, decision, n in rows:
        index = (second - start_s) // bucket_s
        if 0 <= index < buckets:
            counts[index][decision] += n
    return [
        {"start": datetime.fromtimestamp(start_s + i * bucket_s, UTC).isoformat(),
         **rate(c["approve"], c["investigate"])}
        for i, c in enumerate(counts)
    ]


class OutcomeStore:
    """One writer (the consumer thread) and any number of readers (request threads).

    Readers and the writer have their own connections: in WAL mode a reader never waits for
    the writer's transaction.
    """

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._writer = connect(path, synchronous)
        self._writer.executescript(SCHEMA)
        create_tables(self._writer)
        self._writer.executescript(SHADOW_SCHEMA)
        self._reader = connect(path, synchronous)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # -- writing (consumer thread) -------------------------------------------------------

    def add(self, outcomes: Sequence[Outcome], positions: dict[tuple[str, int], int],
            labels: Sequence[StoredLabel] = (), shadows: Sequence[ShadowScore] = ()) -> int:
        """Store decisions, labels, shadow records and the next offsets in one transaction;
        returns decision rows inserted."""
        inserted = 0
        per_model: Counter[tuple[str, str, str]] = Counter()
        per_second: Counter[tuple[int, str]] = Counter()
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in outcomes:
                    d = item.decision
                    cursor = conn.execute(
                        'INSERT INTO outcomes (claim_id, decision, model_name, model_version, '
                        'decided_ms, topic, partition, "offset", body) '
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (claim_id) DO NOTHING",
                        (d.claim_id, d.decision, d.model.name, d.model.version,
                         int(d.decided_at.timestamp() * 1000), item.topic, item.partition,
                         item.offset, item.body),
                    )
                    if cursor.rowcount == 1:
                        inserted += 1
                        per_model[(d.decision, d.model.name, d.model.version)] += 1
                        per_second[(int(d.decided_at.timestamp()), d.decision)] += 1
                conn.executemany(
                    "INSERT INTO model_counts VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (decision, model_name, model_version) DO UPDATE "
                    "SET n = n + excluded.n",
                    [(*key, n) for key, n in per_model.items()],
                )
                conn.executemany(
                    "INSERT INTO second_counts VALUES (?, ?, ?) "
                    "ON CONFLICT (second, decision) DO UPDATE "
                    "SET n = n + excluded.n",
                    [(*key, n) for key, n in per_second.items()],
                )
                store_labels(conn, labels)
                store_shadows(conn, shadows)
                # Approved claims are never open: only investigated ones and labels count.
                touched = [o.decision.claim_id for o in outcomes
                           if o.decision.decision == "investigate"]
                touched += [stored.label.claim_id for stored in labels]
                refresh_open(conn, list(dict.fromkeys(touched)))
                conn.executemany(
                    "INSERT INTO positions VALUES (?, ?, ?) "
                    "ON CONFLICT (topic, partition) DO UPDATE "
                    "SET next_offset = excluded.next_offset",
                    [(topic, partition, offset) for (topic, partition), offset in
                     positions.items()],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return inserted

    def positions(self) -> dict[tuple[str, int], int]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT topic, partition, next_offset FROM positions").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    # -- reading (request threads) -------------------------------------------------------

    def page(self, decision: DecisionKind | None, limit: int, cursor: str | None,
             only_open: bool = False) -> Page:
        """Newest first; ``cursor`` is the ``seq`` below which the page starts (keyset).
        Each item carries the claim's latest label (or null); ``only_open`` keeps the claims
        that no label has closed."""
        before = int(cursor) if cursor is not None else None
        # The open queue holds investigated claims only; its seq is the decision's.
        # CROSS JOIN: the open queue drives (SQLite otherwise walks every decision).
        rows_from = ("open_queue q CROSS JOIN outcomes o ON o.seq = q.seq" if only_open
                     else "outcomes o")
        seq = "q.seq" if only_open else "o.seq"
        clauses: list[str] = []
        params: list[Any] = []
        if decision is not None:
            clauses.append("o.decision = ?")
            params.append(decision)
        if before is not None:
            clauses.append(f"{seq} < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = ('SELECT o.seq, o.topic, o.partition, o."offset", o.body, l.body '  # noqa: S608
               f"FROM {rows_from} LEFT JOIN labels l ON l.claim_id = o.claim_id {where} "
               f"ORDER BY {seq} DESC LIMIT ?")
        with self._read_lock:
            rows = self._reader.execute(sql, (*params, limit + 1)).fetchall()
        items = [
            {"seq": seq, "topic": topic, "partition": partition, "offset": offset,
             "decision": orjson.Fragment(bytes(body)),
             "label": orjson.Fragment(bytes(label)) if label is not None else None}
            for seq, topic, partition, offset, body, label in rows[:limit]
        ]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return Page(items, next_cursor)

    def get_many(self, claim_ids: Sequence[str]) -> dict[str, bytes]:
        """The decisions (JSON as published) of those claim_ids the view holds."""
        found: dict[str, bytes] = {}
        ids = list(dict.fromkeys(claim_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
            sql = f"SELECT claim_id, body FROM outcomes WHERE claim_id IN ({marks})"  # noqa: S608
            with self._read_lock:
                rows = self._reader.execute(sql, chunk).fetchall()
            found.update((cid, bytes(body)) for cid, body in rows)
        return found

    def get(self, claim_id: str) -> bytes | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT body FROM outcomes WHERE claim_id = ?", (claim_id,)).fetchone()
        return bytes(row[0]) if row else None

    def label(self, claim_id: str) -> bytes | None:
        """The claim's latest label as published, if any."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT body FROM labels WHERE claim_id = ?", (claim_id,)).fetchone()
        return bytes(row[0]) if row else None

    def stats(self, now: datetime, bucket_s: int, buckets: int) -> dict[str, Any]:
        now_s = int(now.timestamp())
        start_s = (now_s // bucket_s - buckets + 1) * bucket_s
        with self._read_lock:
            models = self._reader.execute(
                "SELECT decision, model_name, model_version, n FROM model_counts").fetchall()
            seconds = self._reader.execute(
                "SELECT second, decision, n FROM second_counts WHERE second >= ?",
                (start_s,)).fetchall()
        by_model: dict[tuple[str, str], Counter[str]] = {}
        totals: Counter[str] = Counter()
        for decision, name, version, n in models:
            by_model.setdefault((name, version), Counter())[decision] += n
            totals[decision] += n
        return {
            "totals": rate(totals["approve"], totals["investigate"]),
            "bucket_s": bucket_s,
            "timeline": timeline(seconds, start_s, bucket_s, buckets),
            "by_model": [
                {"model_name": name, "model_version": version,
                 **rate(c["approve"], c["investigate"])}
                for (name, version), c in sorted(by_model.items(), key=version_order)
            ],
        }

    def shadow(self) -> dict[str, Any]:
        """Agreement and precision per (champion, challenger) pair (see
        :mod:`gateway.shadow_view`)."""
        with self._read_lock:
            return shadow_summary(self._reader)

    def count(self) -> int:
        with self._read_lock:
            (n,) = self._reader.execute("SELECT count(*) FROM outcomes").fetchone()
        return int(n)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()

    def __enter__(self) -> OutcomeStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def version_order(item: tuple[tuple[str, str], Counter[str]]) -> tuple[str, int, str]:
    (name, version), _ = item
    return (name, int(version) if version.isdigit() else -1, version)
