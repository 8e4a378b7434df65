"""``claimflow score-file``: the stream's decisions for a file, without a broker.

The claims of a JSON Lines file are read in order (the file is the stream: each member's
claims in the order the member stage would see them), each v2 claim gets its member's
history before it from the same functions the stream's member stage calls
(:mod:`features.member`), and the same :class:`scoring.model.ServedModel` scores them in
batches. So a claim's score here equals the stream's for the same claim,
model and history: offline = online.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

import orjson

from features.member import MemberFeatures, MemberHistory, fingerprint, member_features, remember
from schemas import Claim, ClaimV2, ContractError, parse_claim
from scoring.model import ServedModel

logger = logging.getLogger(__name__)

BATCH: Final = 1_000
LABEL_KEYS: Final = ("is_anomaly", "pattern")  # evaluation columns of generated files
# What a claim without member history (a v1 claim) sends in a stateful batch: the model
# refuses such claims, it never scores with this.
NO_HISTORY: Final = MemberFeatures(1.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, None, 0.0)


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
    answers: list[dict[str, Any]] = orjson.loads(
        model.score_json(claims, member_contexts(histories, claims)))
    return answers


def member_contexts(histories: dict[str, MemberHistory], claims: Sequence[Claim | ClaimV2]
                    ) -> list[MemberFeatures] | None:
    """Each claim's member features from its member's history before it, moving
    ``histories`` on (what the stream's member stage computes for one partition: in a file
    every member's claims are in one sequence). None when no claim has a member (v1)."""
    if not any(isinstance(claim, ClaimV2) for claim in claims):
        return None
    features: list[MemberFeatures] = []
    for claim in claims:
        if not isinstance(claim, ClaimV2):
            features.append(NO_HISTORY)
            continue
        history = histories.get(claim.member_id, MemberHistory())
        digest = fingerprint(claim)
        features.append(member_features(claim, history, digest))
        histories[claim.member_id] = remember(history, claim, digest)
    return features


def score_file(model: ServedModel, data: Path, out: IO[bytes]) -> dict[str, int]:
    """Score ``data`` into ``out`` (JSON Lines); returns counts per decision."""
    counts = {"approve": 0, "investigate": 0, "refused": 0}
    with data.open("rb") as handle:
        for answer in score_claims(model, read_claims(handle, str(data))):
            counts["refused" if "error_kind" in answer else answer["decision"]] += 1
            out.write(orjson.dumps(answer) + b"\n")
    return counts
