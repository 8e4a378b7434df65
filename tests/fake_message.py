"""One stand-in for ``confluent_kafka.Message``, shared by the worker's and the gateway's tests."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError


@dataclass
class FakeMessage:
    """The accessors the stream worker and the gateway's consumers call on a message."""

    _value: bytes | None
    _offset: int = 0
    _partition: int = 0
    _key: bytes | None = b"C-1"
    _topic: str = "claims"
    _error: KafkaError | None = None

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error
