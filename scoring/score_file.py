"""``claimflow score-file``: the stream's decisions for a file, without a broker.

The claims of a JSON Lines file are read in order (the file is the stream: each member's
claims in the order the member stage would see them), each v2 claim gets its member's
history before it from the same functions the stream's member stage calls
(:func:`features.member.step_histories`), and the same :class:`scoring.model.ServedModel`
scores them in batches. So a claim's score here equals the stream's for the same claim,
model and history: offline = online. A claim_id seen before for the same member is answered
as the stream sets it aside (``error_kind`` ``duplicate_claim_id`` or ``claim_id_conflict``,
counted as refused), not scored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

from features.member import MemberHistory, Repeat, step_histories
from schemas import Claim, ClaimV2, ContractError, parse_claim
from scoring.model import ServedModel

logger = logging.getLogger(__name__)

BATCH: Final = 1_000
LABEL_KEYS: Final = ("is_anomaly", "pattern")  # evaluation columns of generated files


class ScoreFileError(ValueError):
    """The file cannot be scored (a line outside the contract names its number)."""


def read_claims(lines: Iterable[bytes], source: str) -> Iterator[Claim | ClaimV2]:
    """Claims of a JSON Lines file, labels stripped; blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if isinstance(obj, dict):
                for key in LABEL_KEYS:
                    obj.pop(key, None)
                line = orjson.dumps(obj)
            yield parse_claim(line)
        except (orjson.JSONDecodeError, ContractError) as exc:
            raise ScoreFileError(f"{source}: line {number}: {exc}") from exc


def score_claims(model: ServedModel, claims: Iterable[Claim | ClaimV2], batch: int = BATCH
                 ) -> Iterator[dict[str, Any]]:
    """One answer per claim, in order: the model's ``ScoreResult`` (or ``ScoreRefusal``)
    fields, with the member history the stream would have given it."""
    histories: dict[str, MemberHistory] = {}
    chunk: list[Claim | ClaimV2] = []
    for claim in claims:
        chunk.append(claim)
        if len(chunk) >= batch:
            yield from _score_chunk(model, histories, chunk)
            chunk = []
    if chunk:
        yield from _score_chunk(model, histories, chunk)


def _score_chunk(model: ServedModel, histories: dict[str, MemberHistory],
                 claims: Sequence[Claim | ClaimV2]) -> list[dict[str, Any]]:
    # In a file every member's claims are in one sequence, as on the stream where a
    # member's claims share a partition: the member_id alone is the key.
    keys = [claim.member_id if isinstance(claim, ClaimV2) else None for claim in claims]
    step = step_histories(claims, keys, lambda member: histories.get(member, MemberHistory()))
    # As the stream's loop: member contexts go with the batch when it moved a history on.
    contexts = step.features if step.updates else None
    histories.update(step.updates)
    if not step.repeats:
        answers: list[dict[str, Any]] = orjson.loads(model.score_json(claims, contexts))
        return answers
    # What the stream sets aside as a dead letter is answered with the same kind and reason.
    kept = [i for i in range(len(claims)) if i not in step.repeats]
    scored = iter(orjson.loads(model.score_json(
        [claims[i] for i in kept],
        [step.features[i] for i in kept] if contexts is not None else None)) if kept else ())
    return [set_aside_answer(claims[i].claim_id, step.repeats[i]) if i in step.repeats
            else next(scored) for i in range(len(claims))]


def set_aside_answer(claim_id: str, repeat: Repeat) -> dict[str, Any]:
    return {"claim_id": claim_id, "error_kind": repeat.kind, "error": repeat.reason}


def score_file(model: ServedModel, data: Path, out: IO[bytes]) -> dict[str, int]:
    """Score ``data`` into ``out`` (JSON Lines); returns counts per decision."""
    counts = {"approve": 0, "investigate": 0, "refused": 0}
    with data.open("rb") as handle:
        for answer in score_claims(model, read_claims(handle, str(data))):
            counts["refused" if "error_kind" in answer else answer["decision"]] += 1
            out.write(orjson.dumps(answer) + b"\n")
    return counts
