"""The reply path: the stream's answers to the claims this gateway produced.

A submission produces its claim to the claims topic and waits here for what the stream
worker made of it: a ``Decision`` on ``claims.approved`` / ``claims.investigate`` (keyed by
claim_id) or a ``DeadLetter`` on ``claims.deadletter`` (which names the claim's position).

:class:`ReplyBoard` (no I/O) correlates: a request *watches* its claim_ids, and the position
each claim landed at once the broker confirmed it; a decision wakes every watch of its
claim_id, a dead letter the watch of its position. One event per request, so a batch waits
on one event whatever its size.

:class:`ReplyConsumer` feeds the board from a thread of its own, in every worker process:
no consumer group, all partitions of the three topics assigned at their end when it starts
(the gateway only needs what is decided from then on), ``read_committed`` (the worker's
aborted transactions never answer anyone). A fetch is a long poll: the broker answers as
soon as a committed decision is there (``fetch.min.bytes`` 1), so the wait
(``fetch.wait.max.ms``) only bounds how often an idle consumer asks (500 ms; see
docs/gateway.md for what 5 ms cost the broker). Each worker process reads every decision,
so a request waits in whichever worker it landed, whoever produced the claim. Messages
nobody waits for cost a dictionary lookup of their key (decisions are not decoded).

Why not the outcome view: its consumer group splits the partitions between the workers (a
decision may land in the other process), and it fetches in 100 ms / 1 MiB batches to keep the
broker cheap (docs/gateway.md, "Outcome view"); waiting on it costs those 100 ms and a
SQLite read per poll. The view is still the fallback: a request that started watching after
its claim's decision went by (a replay of a claim still in flight) finds it there.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from gateway.claim_producer import Position
from gateway.restarting import RestartingThread, close_quietly
from schemas import ContractError, DeadLetter

logger = logging.getLogger(__name__)

RECENT_DEAD_LETTERS = 1024


@dataclass
class Watch:
    """One claim_id a request waits for; ``decision`` or ``dead_letter`` once answered."""

    claim_id: str
    wake: threading.Event
    position: Position | None = None
    decision: bytes | None = None
    dead_letter: DeadLetter | None = None

    @property
    def answered(self) -> bool:
        return self.decision is not None or self.dead_letter is not None


@dataclass
class _Request:
    wake: threading.Event = field(default_factory=threading.Event)
    watches: dict[str, Watch] = field(default_factory=dict)


class ReplyBoard:
    """Thread-safe: request threads watch and forget, the consumer thread answers."""

    def __init__(self) -> None:
        # Called (on the consumer's thread) with every dead letter, watched or not: a claim
        # whose request gave up (202) is recorded as set aside there.
        self.on_letter: Callable[[DeadLetter], None] | None = None
        self._lock = threading.Lock()
        self._by_id: dict[str, list[Watch]] = {}
        self._by_position: dict[Position, list[Watch]] = {}
        # Dead letters of the last positions, for a watch whose position is set after its
        # dead letter went by (the broker's ack and the worker race; the worker never wins
        # in practice, but a lost answer would be a 202 instead of the error).
        self._recent: OrderedDict[Position, DeadLetter] = OrderedDict()

    def watch(self, claim_ids: Iterable[str]) -> dict[str, Watch]:
        wake = threading.Event()
        watches = {cid: Watch(cid, wake) for cid in dict.fromkeys(claim_ids)}
        with self._lock:
            for watch in watches.values():
                self._by_id.setdefault(watch.claim_id, []).append(watch)
        return watches

    def locate(self, watch: Watch, position: Position) -> None:
        """The broker confirmed the claim at ``position``: its dead letter will name it."""
        with self._lock:
            watch.position = position
            self._by_position.setdefault(position, []).append(watch)
            early = self._recent.get(position)
        if early is not None:
            self._answer_dead_letter(watch, early)

    def forget(self, watches: Iterable[Watch]) -> None:
        with self._lock:
            for watch in watches:
                same = self._by_id.get(watch.claim_id)
                if same is not None:
                    same[:] = [w for w in same if w is not watch]
                    if not same:
                        del self._by_id[watch.claim_id]
                located = self._by_position.get(watch.position) if watch.position else None
                if located is not None:
                    located[:] = [w for w in located if w is not watch]
                    if not located:
                        del self._by_position[watch.position]  # type: ignore[arg-type]

    def wants(self, claim_id: str) -> bool:
        return claim_id in self._by_id  # a racy read is fine: a miss falls back to the view

    def on_decision(self, claim_id: str, body: bytes) -> None:
        with self._lock:
            watches = list(self._by_id.get(claim_id, ()))
        for watch in watches:
            if not watch.answered:
                watch.decision = body
                watch.wake.set()

    def on_dead_letter(self, letter: DeadLetter) -> None:
        src = letter.source
        position = Position(src.topic, src.partition, src.offset)
        with self._lock:
            watches = list(self._by_position.get(position, ()))
            self._recent[position] = letter
            while len(self._recent) > RECENT_DEAD_LETTERS:
                self._recent.popitem(last=False)
        for watch in watches:
            self._answer_dead_letter(watch, letter)
        if self.on_letter is not None:
            self.on_letter(letter)

    @staticmethod
    def _answer_dead_letter(watch: Watch, letter: DeadLetter) -> None:
        if not watch.answered:
            watch.dead_letter = letter
            watch.wake.set()

    def waiting(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._by_id.values())


def route_reply(board: ReplyBoard, msg: Message, deadletter_topic: str) -> None:
    """One message of the reply topics onto the board (pure but for the board)."""
    value = msg.value()
    if msg.topic() == deadletter_topic:
        try:
            letter = DeadLetter.from_json(value or b"")
        except ContractError as exc:
            logger.warning("reply consumer: skipping %s[%s]@%s: %s", msg.topic(),
                           msg.partition(), msg.offset(), exc)
            return
        if letter.error_kind != "duplicate_claim_id":
            # A claim sent again answers nobody: its first outcome does (by claim_id, or
            # from the outcome view when it went by before the request watched).
            board.on_dead_letter(letter)
        return
    key = msg.key()
    if key is None:
        return
    claim_id = key.decode(errors="replace")
    if value and board.wants(claim_id):
        board.on_decision(claim_id, value)


class ReplyConsumer(RestartingThread):
    """Runs in its own thread between :meth:`start` and :meth:`stop`; restarts itself (with
    backoff) after any failure, from the topics' ends again (answers that went by meanwhile
    are found in the outcome view; a missed dead letter makes its request a 202)."""

    def __init__(
        self,
        board: ReplyBoard,
        bootstrap: str,
        topics: Sequence[str],
        deadletter_topic: str,
        max_wait_ms: int = 500,
        stale_after_s: float = 15.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
    ) -> None:
        super().__init__("gateway-replies", "reply consumer", backoff_s, stale_after_s)
        self._board = board
        self._topics = list(topics)
        self._deadletter_topic = deadletter_topic
        self._consumer_factory = consumer_factory
        self._config = {
            "bootstrap.servers": bootstrap,
            # librdkafka wants a group.id even for assign(); nothing is ever committed to it.
            "group.id": "claimflow-gateway-replies",
            "client.id": "claimflow-gateway-replies",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": max_wait_ms,
            "error_cb": self._on_error,
        }

    def _session(self) -> None:
        consumer = self._consumer_factory(self._config)
        try:
            consumer.assign(self._ends(consumer))
            logger.info("reply consumer reading %s from their ends", ", ".join(self._topics))
            while not self.stopping.is_set():
                for msg in self._poll(consumer):
                    err = msg.error()
                    if err is None:
                        route_reply(self._board, msg, self._deadletter_topic)
                    elif err.code() != KafkaError._PARTITION_EOF:
                        self._on_error(err)
                self.polled()
        finally:
            close_quietly(consumer, "reply consumer")

    @staticmethod
    def _poll(consumer: Consumer) -> list[Message]:
        """What arrived, as soon as something did. (``consume(n, timeout)`` alone waits for
        ``n`` messages or the timeout, so every answer would wait the full 200 ms.)"""
        first = consumer.poll(0.2)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=999, timeout=0)]

    def _ends(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of the reply topics at its current end (an explicit offset, not
        OFFSET_END, which librdkafka resolves later: a decision in between would be lost)."""
        metadata = consumer.list_topics(timeout=10)
        out = []
        for topic in self._topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                raise RuntimeError(f"topic {topic} is not available: "
                                   f"{None if info is None else info.error}")
            for partition in info.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                         timeout=10)
                out.append(TopicPartition(topic, partition, high))
        return out

    def _on_error(self, err: KafkaError) -> None:
        level = logging.ERROR if err.fatal() else logging.WARNING
        logger.log(level, "reply consumer: %s", err.str())
