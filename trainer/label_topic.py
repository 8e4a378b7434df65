"""Read investigators' labels from the compacted ``claims.labels`` topic, start to end.

The topic is read once, from the beginning of every partition up to the end it had when
reading started (its high watermarks), without a consumer group: training takes a
snapshot, it commits nothing. Messages that are not a valid ``Label`` are counted and
skipped (the gateway validated them on the way in; a stray one must not stop training).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas import ContractError
from schemas.label import Label
from trainer.topic_snapshot import read_snapshot

log = logging.getLogger(__name__)


@dataclass
class LabelRead:
    labels: list[Label]
    invalid: int = 0


def read_labels(bootstrap: str, topic: str, timeout_s: float = 60.0) -> LabelRead:
    """The latest label of every claim on ``topic`` (a tombstone withdraws a claim's label)."""
    read = LabelRead(labels=[])
    # A claim's labels share a partition (the key is its claim_id), so their order holds.
    latest: dict[str, Label] = {}
    for message in read_snapshot(bootstrap, topic, what="labels", group="claimflow-trainer",
                                 timeout_s=timeout_s):
        key = (message.key() or b"").decode("utf-8", errors="replace")
        if message.value() is None:  # a tombstone: the claim's label was withdrawn
            latest.pop(key, None)
            continue
        try:
            label = Label.model_validate_json(message.value())
        except (ValueError, ContractError):
            read.invalid += 1
            continue
        latest[label.claim_id] = label
    read.labels = list(latest.values())
    if read.invalid:
        log.warning("%d message(s) on %s are not labels; skipped", read.invalid, topic)
    log.info("read %d label(s) from %s", len(read.labels), topic)
    return read
