"""The shadow period of a (champion, candidate) pair, for the promotion gate: the
``ShadowScore`` records the stream wrote while the candidate ran in shadow behind the
current champion, joined by claim_id with investigators' latest labels.

``claims.shadow`` is written in the stream's transactions, so it is read ``read_committed``
from the beginning of every partition to the end it had when reading started (an aborted
batch's records are never counted). No consumer group commits anything: promotion takes a
snapshot. Records of other pairs and messages that are not a ``ShadowScore`` are skipped.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from schemas import ContractError, ShadowScore
from schemas.label import Label
from trainer.data import DataError
from trainer.gate import ShadowPeriod
from trainer.label_topic import read_labels
from trainer.topic_snapshot import read_snapshot

log = logging.getLogger(__name__)

INVESTIGATE: Final = "investigate"


@dataclass(frozen=True)
class PairDecisions:
    """The champion's and the candidate's decision on one shadowed claim."""

    champion: str
    challenger: str


def pair_decisions(records: Iterable[ShadowScore], name: str, champion_version: str,
                   candidate_version: str) -> dict[str, PairDecisions]:
    """Both decisions per claim_id, for records of this pair only (pure)."""
    found: dict[str, PairDecisions] = {}
    for record in records:
        champion, challenger = record.champion.model, record.challenger.model
        if (champion.name, champion.version, challenger.name, challenger.version) == (
                name, champion_version, name, candidate_version):
            found[record.claim_id] = PairDecisions(record.champion.decision,
                                                   record.challenger.decision)
    return found


def shadow_period(decisions: dict[str, PairDecisions], labels: Iterable[Label]
                  ) -> ShadowPeriod:
    """Agreement, each model's investigate decisions, and those with a closing label
    (pure)."""
    closing = {label.claim_id: label.disposition == "fraud" for label in labels
               if label.closes}
    counts = dict.fromkeys(("agree", "champion_labelled", "champion_fraud",
                            "challenger_labelled", "challenger_fraud", "champion_flagged",
                            "challenger_flagged", "both_flagged", "both_labelled", "unseen"),
                           0)
    for claim_id, pair in decisions.items():
        counts["agree"] += pair.champion == pair.challenger
        champion, challenger = pair.champion == INVESTIGATE, pair.challenger == INVESTIGATE
        counts["champion_flagged"] += champion
        counts["challenger_flagged"] += challenger
        fraud = closing.get(claim_id)
        counts["both_flagged"] += champion and challenger
        counts["both_labelled"] += champion and challenger and fraud is not None
        counts["unseen"] += challenger and not champion and fraud is None
        if fraud is None:
            continue
        for side, decision in (("champion", pair.champion), ("challenger", pair.challenger)):
            if decision == INVESTIGATE:
                counts[f"{side}_labelled"] += 1
                counts[f"{side}_fraud"] += fraud
    return ShadowPeriod(claims=len(decisions), **counts)


def read_shadow_period(bootstrap: str, shadow_topic: str, labels_topic: str, name: str,
                       champion_version: str, candidate_version: str,
                       timeout_s: float = 30.0) -> ShadowPeriod:
    """The pair's shadow period from the broker; raises ``DataError`` when a topic cannot
    be read."""
    _check_reachable(bootstrap)
    decisions = pair_decisions(_read_committed(bootstrap, shadow_topic, timeout_s), name,
                               champion_version, candidate_version)
    labels = read_labels(bootstrap, labels_topic, timeout_s).labels
    period = shadow_period(decisions, labels)
    log.info("shadow period of v%s behind v%s: %s", candidate_version, champion_version,
             period)
    return period


def _check_reachable(bootstrap: str, timeout_s: float = 2.0) -> None:
    """Fail fast when no bootstrap server accepts a connection: the Kafka client would wait
    out its whole timeout, and a promotion without a broker is the common offline case."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                     timeout=timeout_s).close()
            return
        except (OSError, ValueError):
            continue
    raise DataError(f"no broker answers at {bootstrap}")


def _read_committed(bootstrap: str, topic: str, timeout_s: float) -> Iterator[ShadowScore]:
    invalid = 0
    for message in read_snapshot(bootstrap, topic, what="shadow", group="claimflow-promote",
                                 timeout_s=timeout_s, read_committed=True):
        if message.value() is None:
            continue
        try:
            yield ShadowScore.model_validate_json(message.value())
        except (ValueError, ContractError):
            invalid += 1
    if invalid:
        log.warning("%d message(s) on %s are not shadow scores; skipped", invalid, topic)
