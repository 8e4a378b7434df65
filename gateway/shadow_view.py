"""The outcome view's share of ``claims.shadow``: one row per claim with both models'
decisions (in the transaction of :meth:`gateway.outcome_store.OutcomeStore.add`), running
counts per (champion, challenger) pair, and the shadow summary the dashboard and
``GET /api/v1/shadow`` show:

* agreement: the share of shadowed claims that champion and challenger decided alike;
* precision of each model's ``investigate`` decisions on claims with a closing disposition
  (``fraud`` or ``legitimate`` in ``claims.labels``): confirmed fraud / labelled.

Investigators label the claims the champion sends them, so a claim only the challenger
flags has no label: the challenger's precision is measured on the claims both flagged
(``investigate_unlabelled`` counts the rest). Beside it, the bound the promotion gate
judges the challenger on (``schemas.shadow.precision_bound``): its flags no investigator saw
counted as legitimate, at the rate the claims both flagged were labelled.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.polled import Where
from schemas import ContractError, ShadowScore
from schemas.shadow import precision_bound

logger = logging.getLogger(__name__)

SHADOW_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS shadow (
    claim_id            TEXT PRIMARY KEY,
    champion_name       TEXT NOT NULL,
    champion_version    TEXT NOT NULL,
    champion_decision   TEXT NOT NULL,
    challenger_name     TEXT NOT NULL,
    challenger_version  TEXT NOT NULL,
    challenger_decision TEXT NOT NULL,
    decided_ms          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_counts (
    champion_name TEXT NOT NULL, champion_version TEXT NOT NULL,
    challenger_name TEXT NOT NULL, challenger_version TEXT NOT NULL,
    n INTEGER NOT NULL, agree INTEGER NOT NULL,
    champion_investigate INTEGER NOT NULL, challenger_investigate INTEGER NOT NULL,
    first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (champion_name, champion_version, challenger_name, challenger_version)
) WITHOUT ROWID;
"""

Pair = tuple[str, str, str, str]  # champion name, version, challenger name, version


@dataclass(frozen=True, slots=True)
class PairCounts:
    """Running counts of one (champion, challenger) pair."""

    n: int
    agree: int
    champion_investigate: int
    challenger_investigate: int
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class Labelled:
    """Of one model's ``investigate`` decisions with a closing disposition: how many, and
    how many were confirmed fraud."""

    labelled: int = 0
    fraud: int = 0


@dataclass(frozen=True, slots=True)
class Overlap:
    """What the bound needs beside the challenger's labelled flags: claims both models
    flagged, how many of those were labelled, and how many of the challenger's own flags
    (the champion approved them) carry a label anyway."""

    both_flagged: int = 0
    both_labelled: int = 0
    only_labelled: int = 0


def precision(labelled: Labelled) -> float | None:
    return labelled.fraud / labelled.labelled if labelled.labelled else None


def model_summary(name: str, version: str, investigate: int, labelled: Labelled
                  ) -> dict[str, Any]:
    return {"name": name, "version": version, "investigate": investigate,
            "labelled": labelled.labelled, "fraud": labelled.fraud,
            "investigate_unlabelled": investigate - labelled.labelled,
            "precision": precision(labelled)}


def pair_summary(pair: Pair, counts: PairCounts, champion: Labelled, challenger: Labelled,
                 overlap: Overlap | None = None) -> dict[str, Any]:
    """One pair's numbers (pure; what the API answers per pair)."""
    overlap = overlap or Overlap()
    unseen = max(0, counts.challenger_investigate - overlap.both_flagged
                 - overlap.only_labelled)
    from datetime import UTC, datetime

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    return {
        "champion": model_summary(pair[0], pair[1], counts.champion_investigate, champion),
        "challenger": model_summary(pair[2], pair[3], counts.challenger_investigate,
                                    challenger),
        "claims": counts.n,
        "agree": counts.agree,
        "agreement": counts.agree / counts.n if counts.n else None,
        "challenger_unseen": unseen,
        "challenger_precision_bound": precision_bound(
            challenger.fraud, challenger.labelled, unseen, overlap.both_flagged,
            overlap.both_labelled),
        "first_decided_at": iso(counts.first_ms),
        "last_decided_at": iso(counts.last_ms),
    }


def decode_shadow(value: bytes, where: Where) -> ShadowScore | None:
    """The shadow record in ``value``, or None (logged) when it is not a valid ``ShadowScore``."""
    try:
        return ShadowScore.from_json(value)
    except ContractError as exc:
        logger.warning("skipping shadow record %s: %s", where, exc)
        return None


def pair_of(record: ShadowScore) -> Pair:
    return (record.champion.model.name, record.champion.model.version,
            record.challenger.model.name, record.challenger.model.version)


def store_shadows(conn: sqlite3.Connection, records: Sequence[ShadowScore]) -> None:
    """Insert the new claims' rows (a re-read record changes nothing) and count them."""
    added: dict[Pair, list[int]] = {}
    for r in records:
        decided_ms = int(r.decided_at.timestamp() * 1000)
        pair = pair_of(r)
        cursor = conn.execute(
            "INSERT INTO shadow VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (claim_id) "
            "DO NOTHING",
            (r.claim_id, *pair[:2], r.champion.decision, *pair[2:], r.challenger.decision,
             decided_ms))
        if cursor.rowcount != 1:
            continue
        n, agree, champ, chall, first, last = added.get(pair, [0, 0, 0, 0, decided_ms,
                                                               decided_ms])
        added[pair] = [n + 1, agree + (r.champion.decision == r.challenger.decision),
                       champ + (r.champion.decision == "investigate"),
                       chall + (r.challenger.decision == "investigate"),
                       min(first, decided_ms), max(last, decided_ms)]
    conn.executemany(
        "INSERT INTO shadow_counts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (champion_name, champion_version, challenger_name, challenger_version) "
        "DO UPDATE SET n = n + excluded.n, agree = agree + excluded.agree, "
        "champion_investigate = champion_investigate + excluded.champion_investigate, "
        "challenger_investigate = challenger_investigate + excluded.challenger_investigate, "
        "first_ms = min(first_ms, excluded.first_ms), last_ms = max(last_ms, excluded.last_ms)",
        [(*pair, *values) for pair, values in added.items()])


# Per pair and model: investigate decisions whose claim has a closing disposition. Driven
# by the labels (far fewer than shadowed claims).
LABELLED_SQL: Final = """
SELECT s.champion_name, s.champion_version, s.challenger_name, s.challenger_version,
       s.champion_decision, s.challenger_decision, l.disposition, count(*)
FROM labels l JOIN shadow s ON s.claim_id = l.claim_id
WHERE l.disposition IN ('fraud', 'legitimate')
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def labelled_counts(rows: Sequence[tuple[str, str, str, str, str, str, str, int]]
                    ) -> dict[Pair, tuple[Labelled, Labelled]]:
    """(champion, challenger) precision inputs per pair from :data:`LABELLED_SQL` rows."""
    tally: dict[Pair, Counter[str]] = {}
    for *pair, champ, chall, disposition, n in rows:
        c = tally.setdefault((pair[0], pair[1], pair[2], pair[3]), Counter())
        fraud = n if disposition == "fraud" else 0
        if champ == "investigate":
            c["champion"] += n
            c["champion_fraud"] += fraud
        if chall == "investigate":
            c["challenger"] += n
            c["challenger_fraud"] += fraud
    return {pair: (Labelled(c["champion"], c["champion_fraud"]),
                   Labelled(c["challenger"], c["challenger_fraud"]))
            for pair, c in tally.items()}


# Per pair: claims both models decided investigate (a scan of the shadow table per summary;
# the dashboard asks every few seconds and the table holds one row per shadowed claim).
BOTH_FLAGGED_SQL: Final = """
SELECT champion_name, champion_version, challenger_name, challenger_version, count(*)
FROM shadow WHERE champion_decision = 'investigate' AND challenger_decision = 'investigate'
GROUP BY 1, 2, 3, 4
"""


def overlap_counts(labelled_rows: Sequence[tuple[str, str, str, str, str, str, str, int]],
                   both_rows: Sequence[tuple[str, str, str, str, int]]) -> dict[Pair, Overlap]:
    """:class:`Overlap` per pair from :data:`LABELLED_SQL` and :data:`BOTH_FLAGGED_SQL` rows
    (pure)."""
    tally: dict[Pair, Counter[str]] = {}
    for a, b, c, d, n in both_rows:
        tally.setdefault((a, b, c, d), Counter())["both_flagged"] += n
    for a, b, c, d, champ, chall, _disposition, n in labelled_rows:
        if chall != "investigate":
            continue
        key = "both_labelled" if champ == "investigate" else "only_labelled"
        tally.setdefault((a, b, c, d), Counter())[key] += n
    return {pair: Overlap(c["both_flagged"], c["both_labelled"], c["only_labelled"])
            for pair, c in tally.items()}


def shadow_summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every (champion, challenger) pair seen on the shadow topic, newest shadow period
    first."""
    counts = {(a, b, c, d): PairCounts(*rest) for a, b, c, d, *rest in conn.execute(
        "SELECT * FROM shadow_counts").fetchall()}
    labelled_rows = conn.execute(LABELLED_SQL).fetchall()
    labelled = labelled_counts(labelled_rows)
    overlaps = overlap_counts(labelled_rows, conn.execute(BOTH_FLAGGED_SQL).fetchall())
    pairs = sorted(counts, key=lambda p: counts[p].last_ms, reverse=True)
    empty = (Labelled(), Labelled())
    return {"pairs": [pair_summary(pair, counts[pair], *labelled.get(pair, empty),
                                   overlaps.get(pair))
                      for pair in pairs]}
