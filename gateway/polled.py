"""A poll's messages for one view: each decoded by the view's own decoder, the next offset of
every partition they came from, and how many did not decode.

The outcome view reads decisions, labels and shadow records from one consumer; each kind has
its decoder, and they share this walk over the messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import Message

T = TypeVar("T")

# (topic, partition) -> the offset after the last message read there
Positions = dict[tuple[str, int], int]


@dataclass(frozen=True)
class Where:
    """A message's position."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Decoded(Generic[T]):
    items: list[T]
    positions: Positions
    invalid: int


def decode_poll(messages: Sequence[Message],
                decode: Callable[[bytes, Where], T | None]) -> Decoded[T]:
    """``decode`` gets each message's value (empty for a tombstone) and position and returns
    None, having logged why, for a message it cannot read."""
    items: list[T] = []
    positions: Positions = {}
    invalid = 0
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None
        assert partition is not None
        assert offset is not None
        positions[(topic, partition)] = offset + 1
        item = decode(msg.value() or b"", Where(topic, partition, offset))
        if item is None:
            invalid += 1
        else:
            items.append(item)
    return Decoded(items, positions, invalid)
