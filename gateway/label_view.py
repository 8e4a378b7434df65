"""The outcome view's share of ``claims.labels``: decoding labels and storing the latest one
per claim in the view's SQLite database (in the transaction of :meth:`OutcomeStore.add`)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.polled import Where
from schemas import ContractError, Label
from schemas.label import CLOSING_DISPOSITIONS

logger = logging.getLogger(__name__)

LABELS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS labels (
    claim_id     TEXT PRIMARY KEY,
    disposition  TEXT NOT NULL,
    investigator TEXT NOT NULL,
    decided_ms   INTEGER NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    body         BLOB NOT NULL
) WITHOUT ROWID;
"""


# The open queue, kept as rows rather than computed by the page's query: with every one of
# 100k investigated claims labelled, finding 25 open ones by scanning the decisions takes
# ~250 ms per poll (docs/gateway.md, "Outcome view"); this table answers from its own index.
OPEN_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS open_queue (
    seq      INTEGER PRIMARY KEY,  -- the decision's seq in outcomes
    claim_id TEXT NOT NULL UNIQUE
);
"""


@dataclass(frozen=True, slots=True)
class StoredLabel:
    """A label read from ``labels[partition]@offset``; ``body`` is its JSON as published."""

    label: Label
    partition: int
    offset: int
    body: bytes


def decode_label(value: bytes, where: Where) -> StoredLabel | None:
    """The label in ``value``, or None (logged) when it is not a valid ``Label``. A tombstone
    (no value) is skipped the same way: nothing deletes labels, and compaction removes it from
    the topic."""
    try:
        label = Label.from_json(value)
    except ContractError as exc:
        logger.warning("skipping label %s: %s", where, exc)
        return None
    return StoredLabel(label, where.partition, where.offset, value)


def store_labels(conn: sqlite3.Connection, labels: Sequence[StoredLabel]) -> None:
    """Upsert: a claim's later label (a higher offset of its partition) replaces the earlier
    one, as compaction does on the topic. A re-read older message changes nothing."""
    conn.executemany(
        'INSERT INTO labels (claim_id, disposition, investigator, decided_ms, partition, '
        '"offset", body) VALUES (?, ?, ?, ?, ?, ?, ?) '
        "ON CONFLICT (claim_id) DO UPDATE SET disposition = excluded.disposition, "
        "investigator = excluded.investigator, decided_ms = excluded.decided_ms, "
        'partition = excluded.partition, "offset" = excluded."offset", body = excluded.body '
        'WHERE excluded.partition != labels.partition OR excluded."offset" > labels."offset"',
        [(s.label.claim_id, s.label.disposition, s.label.investigator,
          int(s.label.decided_at.timestamp() * 1000), s.partition, s.offset, s.body)
         for s in labels],
    )


def create_tables(conn: sqlite3.Connection) -> None:
    """The labels and open-queue tables; a view from before them gets its open queue filled
    from the decisions it already holds."""
    had_queue = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'open_queue'").fetchone()
    conn.executescript(LABELS_SCHEMA + OPEN_SCHEMA)
    if not had_queue:
        with conn:
            conn.execute(f"INSERT OR IGNORE INTO open_queue (seq, claim_id) {OPEN_CLAIMS}")


def refresh_open(conn: sqlite3.Connection, claim_ids: Sequence[str]) -> None:
    """Bring the open queue up to date for claims whose decision or label just changed: an
    investigated claim is in it while no label closes it."""
    for start in range(0, len(claim_ids), 500):
        chunk = list(claim_ids[start:start + 500])
        marks = ", ".join("?" * len(chunk))
        delete = f"DELETE FROM open_queue WHERE claim_id IN ({marks})"  # noqa: S608
        insert = f"INSERT INTO open_queue (seq, claim_id) {OPEN_CLAIMS} AND o.claim_id IN ({marks})"
        conn.execute(delete, chunk)
        conn.execute(insert, chunk)


def open_clause(alias: str) -> str:
    """SQL condition: the claim has no label that closes it (none yet, or needs_info)."""
    closing = ", ".join(f"'{d}'" for d in sorted(CLOSING_DISPOSITIONS))
    return f"({alias}.disposition IS NULL OR {alias}.disposition NOT IN ({closing}))"


# Investigated claims that no label closes (every one, or those of an IN list appended).
OPEN_CLAIMS: Final = (  # constants only, no input
    "SELECT o.seq, o.claim_id FROM outcomes o "  # noqa: S608
    "LEFT JOIN labels l ON l.claim_id = o.claim_id "
    f"WHERE o.decision = 'investigate' AND {open_clause('l')}"
)
