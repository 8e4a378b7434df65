"""Shadow records, pure (no Kafka, no HTTP): one ``ShadowScore`` per decided claim from the
champion's and the challenger's answers to the same batch.

The challenger never routes anything: a claim is decided by the champion whatever the
challenger answered. A challenger answer that does not fit (another number of answers,
another claim order) drops the batch's shadow records; a challenger refusal (it reads
another contract version) drops that claim's. Both are counted by the caller.

The challenger's answer comes as columns (:class:`ShadowColumns`) and the records are
written from one bytes template each, so the worker's shadow path (decoding the columns,
writing the records) costs about 2 µs per claim in process (500-claim v1 batches;
docs/stream-worker.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import orjson
from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json

from schemas import (
    SCHEMA_VERSION,
    Claim,
    ClaimV2,
    DecisionKind,
    ModelRef,
    ScoreAnswer,
    ScoreResult,
)
from scorer.routing import DecisionEncoder, Outgoing, Position

# The fields ShadowEncoder writes, in ShadowScore's order (a unit test compares them with
# the contract, so the fast path cannot drift from it).
ENCODED_SHADOW_FIELDS: Final = (
    "schema_version", "claim_id", "champion", "challenger", "agree", "decided_at", "source",
)


class ShadowColumns(BaseModel):
    """The challenger's verdicts on a batch, as the model service sends them in a shadow
    answer (``ServedModel.verdicts_json``): one model and threshold, then one entry per
    claim in the batch's order; ``None`` score and decision for a claim the challenger does
    not read (another contract version). No reasons: a shadow record never reads them.
    Decoding these columns costs the worker about 0.2 µs per claim, a tenth of one answer
    object per claim."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: ModelRef
    threshold: float
    claim_ids: list[str]
    scores: list[float | None]
    decisions: list[DecisionKind | None]


class ShadowMismatchError(ValueError):
    """The challenger's answers do not match the batch (count or claim order)."""


@dataclass(slots=True)
class ShadowRecords:
    """The batch's shadow records, and how many decided claims got none (refused)."""

    outgoing: list[Outgoing] = field(default_factory=list)
    refused: int = 0
    agreed: int = 0


def _floats(values: Sequence[float | None]) -> list[bytes]:
    """Each value as JSON, in one orjson call for the whole column (orjson writes a float
    exactly as pydantic does, the shortest text that reads back the same number; a unit
    test checks the records against the contract's own serializer)."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


class ShadowEncoder:
    """Writes ``ShadowScore(...).to_json()`` without building a ShadowScore per claim: one
    bytes template per record, its constant parts (models, thresholds, decided_at, topic)
    written once per batch, by the decisions' encoder, and its numbers once per column."""

    def __init__(self, decided_at: datetime) -> None:
        self.parts = DecisionEncoder(decided_at)

    def encode_batch(self, champion: Sequence[ScoreResult], challenger: ShadowColumns,
                     rows: Sequence[int], positions: Sequence[Position]) -> list[bytes]:
        """One record per champion result, beside the challenger's verdict in row ``rows[i]``
        of its columns (a verdict it gave: the caller skips claims it refused) and read at
        ``positions[i]``."""
        parts = self.parts
        challenger_model = parts.model_json(challenger.model)
        challenger_threshold = to_json(challenger.threshold)
        champion_scores = _floats([result.anomaly_score for result in champion])
        challenger_scores = _floats([challenger.scores[row] for row in rows])
        decisions = challenger.decisions
        decided_at = parts.decided_at_json
        out = []
        for result, row, position, champion_score, challenger_score in zip(
                champion, rows, positions, champion_scores, challenger_scores, strict=True):
            challenger_decision = decisions[row]
            assert challenger_decision is not None, "only scored claims are encoded"
            out.append(_RECORD % (
                SCHEMA_VERSION, to_json(result.claim_id),
                parts.model_json(result.model), champion_score, to_json(result.threshold),
                result.decision.encode(),
                challenger_model, challenger_score, challenger_threshold,
                challenger_decision.encode(),
                b"true" if result.decision == challenger_decision else b"false",
                decided_at, parts.topic_json(position.topic), position.partition,
                position.offset,
            ))
        return out


# A ShadowScore in ENCODED_SHADOW_FIELDS order, each verdict in ShadowVerdict's order.
_RECORD: Final = (
    b'{"schema_version":%d,"claim_id":%s,'
    b'"champion":{"model":%s,"anomaly_score":%s,"threshold":%s,"decision":"%s"},'
    b'"challenger":{"model":%s,"anomaly_score":%s,"threshold":%s,"decision":"%s"},'
    b'"agree":%s,"decided_at":%s,'
    b'"source":{"kind":"stream","topic":%s,"partition":%d,"offset":%d}}'
)


def check_shadow(claims: Sequence[Claim | ClaimV2], shadow: ShadowColumns) -> None:
    n = len(claims)
    if not len(shadow.claim_ids) == len(shadow.scores) == len(shadow.decisions) == n:
        raise ShadowMismatchError(
            f"challenger answered {len(shadow.claim_ids)} claim ids, {len(shadow.scores)} "
            f"scores and {len(shadow.decisions)} decisions for {n} claims")
    for claim, claim_id in zip(claims, shadow.claim_ids, strict=True):
        if claim.claim_id != claim_id:
            raise ShadowMismatchError(f"challenger answered for claim_id={claim_id} where "
                                      f"claim_id={claim.claim_id} was asked")


def shadow_records(
    claims: Sequence[Claim | ClaimV2],
    positions: Sequence[Position],
    champion: Sequence[ScoreAnswer],
    challenger: ShadowColumns,
    *,
    decided_at: datetime,
    topic: str,
) -> ShadowRecords:
    """One ``ShadowScore`` per claim both models scored, keyed by claim_id. A claim the
    champion refused is dead-lettered (no decision, no shadow record); one only the
    challenger refused is decided and counted as ``refused``. Raises :class:`ShadowMismatchError`
    when the challenger's answers do not match the batch."""
    check_shadow(claims, challenger)
    records = ShadowRecords()
    decisions = challenger.decisions
    both: list[ScoreResult] = []
    rows: list[int] = []
    where: list[Position] = []
    for row, (champ, position) in enumerate(zip(champion, positions, strict=True)):
        if not isinstance(champ, ScoreResult):
            continue
        shadow_decision = decisions[row]
        if shadow_decision is None or challenger.scores[row] is None:
            records.refused += 1
            continue
        records.agreed += champ.decision == shadow_decision
        both.append(champ)
        rows.append(row)
        where.append(position)
    values = ShadowEncoder(decided_at).encode_batch(both, challenger, rows, where)
    records.outgoing = [Outgoing(topic, champ.claim_id.encode(), value)
                        for champ, value in zip(both, values, strict=True)]
    return records
