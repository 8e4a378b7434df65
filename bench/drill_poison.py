"""Drill 5, poison flood: malformed messages of many kinds interleaved with good claims.

Pass when every bad message is dead-lettered exactly once (found by its source
partition/offset) with a reason, its original bytes and key, and an error kind that fits;
every good claim is decided exactly once; and the scorer is still running at the end.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from bench.drill_common import (
    DrillContext,
    DrillResult,
    check_exactly_once,
    read_outcomes,
    verdict,
    wait_until,
)
from bench.stack_harness import Topics
from schemas.dead_letter import ErrorKind

logger = logging.getLogger(__name__)

NUMBER = 5
NAME = "poison-flood"

Kinds = frozenset[ErrorKind]
NOT_JSON: Kinds = frozenset({"not_json"})
CONTRACT: Kinds = frozenset({"contract_violation"})
EITHER: Kinds = frozenset({"not_json", "contract_violation"})
EMPTY: Kinds = frozenset({"empty"})
TOO_LARGE: Kinds = frozenset({"too_large"})
# Above the scorer's default max_claim_bytes (16 KiB), well under the broker's 1 MB limit
# even once base64-encoded inside the dead letter.
HUGE_BYTES = 300_000


@dataclass(frozen=True)
class Poison:
    kind: str
    key: bytes | None
    value: bytes | None
    expected: Kinds  # acceptable DeadLetter.error_kind values


def good_claim(claim_id: str, rng: random.Random) -> dict[str, Any]:
    """A claim the contract accepts (plausible values, not a realistic distribution)."""
    services = rng.randint(1, 8)
    submitted = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 86_400))
    return {
        "schema_version": 1,
        "claim_id": claim_id,
        "claim_amount": round(rng.lognormvariate(6.5, 0.6) * services / 3 + 20, 2),
        "num_services": services,
        "patient_age": rng.randint(0, 99),
        "provider_id": rng.randint(1, 400),
        "days_since_last_claim": rng.randint(0, 365),
        "submitted_at": submitted.isoformat().replace("+00:00", "Z"),
    }


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _with(base: dict[str, Any], **changes: Any) -> bytes:
    return dumps({**base, **changes})


def _without(base: dict[str, Any], field: str) -> bytes:
    return dumps({k: v for k, v in base.items() if k != field})


def _junk(rng: random.Random) -> bytes:
    # 0xff never occurs in UTF-8, so this can never be read as JSON text.
    return b"\xff" + bytes(rng.randrange(256) for _ in range(63))


# kind -> (builder(base claim, rng) -> value, acceptable error kinds). Each kind is a way
# real producers get it wrong; the drill needs at least 12.
PoisonBuilder = Callable[[dict[str, Any], random.Random], bytes | None]
POISON_KINDS: dict[str, tuple[PoisonBuilder, Kinds]] = {
    "not_json_text": (lambda b, r: b"this is not a claim, it is prose", NOT_JSON),
    "binary_junk": (lambda b, r: _junk(r), NOT_JSON),
    "empty_value": (lambda b, r: b"", EMPTY),
    "null_value": (lambda b, r: None, EMPTY),
    "truncated_json": (lambda b, r: dumps(b)[: len(dumps(b)) // 2], NOT_JSON),
    "json_array": (lambda b, r: dumps([b]), CONTRACT),
    "json_string": (lambda b, r: b'"C-1"', CONTRACT),
    "json_null": (lambda b, r: b"null", CONTRACT),
    "amount_as_string": (lambda b, r: _with(b, claim_amount=str(b["claim_amount"])), CONTRACT),
    "services_as_bool": (lambda b, r: _with(b, num_services=True), CONTRACT),
    "services_as_float": (lambda b, r: _with(b, num_services=2.5), CONTRACT),
    "missing_amount": (lambda b, r: _without(b, "claim_amount"), CONTRACT),
    "missing_claim_id": (lambda b, r: _without(b, "claim_id"), CONTRACT),
    "extra_label_field": (lambda b, r: _with(b, is_anomaly=True), CONTRACT),
    "nan_amount": (lambda b, r: dumps(b).replace(
        f'"claim_amount":{b["claim_amount"]}'.encode(), b'"claim_amount":NaN'), EITHER),
    "infinite_amount": (lambda b, r: dumps(b).replace(
        f'"claim_amount":{b["claim_amount"]}'.encode(), b'"claim_amount":Infinity'), EITHER),
    "negative_amount": (lambda b, r: _with(b, claim_amount=-abs(b["claim_amount"])), CONTRACT),
    "zero_amount": (lambda b, r: _with(b, claim_amount=0), CONTRACT),
    "absurd_amount": (lambda b, r: _with(b, claim_amount=1e12), CONTRACT),
    "zero_services": (lambda b, r: _with(b, num_services=0), CONTRACT),
    "age_150": (lambda b, r: _with(b, patient_age=150), CONTRACT),
    "negative_days": (lambda b, r: _with(b, days_since_last_claim=-3), CONTRACT),
    "provider_overflow": (lambda b, r: _with(b, provider_id=10**30), CONTRACT),
    "null_age": (lambda b, r: _with(b, patient_age=None), CONTRACT),
    "wrong_schema_version": (lambda b, r: _with(b, schema_version=3), CONTRACT),
    "bad_claim_id": (lambda b, r: _with(b, claim_id="<script>alert(1)</script>"), CONTRACT),
    "claim_id_too_long": (lambda b, r: _with(b, claim_id="C" * 65), CONTRACT),
    "naive_timestamp": (lambda b, r: _with(b, submitted_at="2026-11-26T18:00:00"), CONTRACT),
    "bad_timestamp": (lambda b, r: _with(b, submitted_at="yesterday"), CONTRACT),
    "invalid_utf8_in_string": (lambda b, r: _with(b, claim_id="XX").replace(
        b'"XX"', b'"\xc3\x28"'), NOT_JSON),
    "utf16_json": (lambda b, r: json.dumps(b).encode("utf-16"), NOT_JSON),
    "deeply_nested": (lambda b, r: b'{"claim":' + b"[" * 5000 + b"]" * 5000 + b"}", EITHER),
    "huge_payload": (lambda b, r: _with(b, note="x" * HUGE_BYTES), TOO_LARGE),
}


def build_flood(rounds: int, good_per_round: int, seed: int, run_id: str
                ) -> tuple[list[Poison], list[str]]:
    """Messages in send order (good claims and one poison of every kind per round, shuffled),
    plus the claim_ids of the good ones."""
    rng = random.Random(seed)
    messages: list[Poison] = []
    good_ids: list[str] = []
    n = 0
    for r in range(rounds):
        block: list[Poison] = []
        for _ in range(good_per_round):
            claim_id = f"P{run_id}-{n:07d}"
            n += 1
            good_ids.append(claim_id)
            block.append(Poison("good", claim_id.encode(), dumps(good_claim(claim_id, rng)),
                                frozenset()))
        for kind, (build, expected) in POISON_KINDS.items():
            base = good_claim(f"X{run_id}-{r}", rng)
            # Some poison comes without a key, some with a key that is not text.
            key: bytes | None = f"poison-{kind}-{r}".encode()
            if kind == "binary_junk":
                key = b"\xfe\xff" + bytes([r % 256])
            elif kind == "not_json_text":
                key = None
            block.append(Poison(kind, key, build(base, rng), expected))
        rng.shuffle(block)
        messages.extend(block)
    return messages, good_ids


@dataclass
class Sent:
    poison: Poison
    partition: int = -1
    offset: int = -1
    error: str | None = None


def produce_all(bootstrap: str, topic: str, messages: list[Poison]) -> list[Sent]:
    """Send in order with an idempotent producer; record where each message landed."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5, "message.max.bytes": 2_000_000})
    sent = [Sent(m) for m in messages]

    def delivered(record: Sent) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                record.error = str(err)
            else:
                record.partition, record.offset = msg.partition() or 0, msg.offset() or 0
        return callback

    for record in sent:
        while True:
            try:
                producer.produce(topic, record.poison.value, record.poison.key,
                                 on_delivery=delivered(record))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages not delivered within 60 s")
    return sent


def kinds_delivered(sent: list[Sent]) -> list[str]:
    """Poison kinds the broker acknowledged: what the drill really sent, not its catalogue
    (a kind whose every message failed to send did not test anything)."""
    return sorted({s.poison.kind for s in sent if s.poison.kind != "good" and s.error is None
                   and s.offset >= 0})


def kinds_dead_lettered(per_kind: dict[str, dict[str, int]]) -> list[str]:
    """Kinds whose every sent message came back as one correct dead letter."""
    return sorted(kind for kind, tally in per_kind.items()
                  if tally.get("ok", 0) > 0 and tally.get("ok") == sum(
                      n for name, n in tally.items() if not name.startswith("kind:")))


def keeps_original(kept: bytes, sent: bytes, error_kind: str) -> bool:
    """The dead letter holds the message as sent; a too-large one may hold only its first
    bytes (the dead letter itself must fit under the broker's message size limit)."""
    if error_kind == "too_large":
        return 0 < len(kept) <= len(sent) and sent.startswith(kept)
    return kept == sent


def check_dead_letters(sent: list[Sent], outcomes_letters: list[Any], topic: str
                       ) -> dict[str, Any]:
    """Match every poison message to its dead letter by source position."""
    letters: dict[tuple[int, int], list[Any]] = {}
    for letter in outcomes_letters:
        if letter.source.topic == topic:
            letters.setdefault((letter.source.partition, letter.source.offset), []).append(letter)
    per_kind: dict[str, Counter[str]] = {}
    problems: list[str] = []
    good_dead_lettered = 0
    for record in sent:
        kind = record.poison.kind
        found = letters.get((record.partition, record.offset), [])
        if kind == "good":
            good_dead_lettered += len(found)
            continue
        tally = per_kind.setdefault(kind, Counter())
        where = f"{kind} at [{record.partition}]@{record.offset}"
        if len(found) != 1:
            tally["missing" if not found else "duplicated"] += 1
            problems.append(f"{where}: {len(found)} dead letters")
            continue
        letter = found[0]
        ok = True
        if not letter.error.strip():
            problems.append(f"{where}: empty reason")
            ok = False
        if letter.error_kind not in record.poison.expected:
            problems.append(f"{where}: error_kind {letter.error_kind}, expected "
                            f"{sorted(record.poison.expected)}")
            ok = False
        if not keeps_original(letter.original_value, record.poison.value or b"",
                              letter.error_kind):
            problems.append(f"{where}: original bytes not kept")
            ok = False
        tally["ok" if ok else "wrong"] += 1
        tally[f"kind:{letter.error_kind}"] += 1
    return {"per_kind": {k: dict(v) for k, v in per_kind.items()}, "problems": problems,
            "good_dead_lettered": good_dead_lettered}


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    rounds, good_per_round = (3, 40) if smoke else (60, 150)
    stack = ctx.stack
    topics = stack.create_topics(Topics.fresh("d5"), partitions=3)
    group = f"d5-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:6]
    messages, good_ids = build_flood(rounds, good_per_round, ctx.seed, run_id)
    bad = [m for m in messages if m.kind != "good"]
    scorer = stack.start_scorer("d5-scorer", topics, group, ctx.model.url)
    started = time.monotonic()
    sent = produce_all(stack.bootstrap, topics.claims, messages)
    undelivered = [s for s in sent if s.error]

    def done() -> bool:
        if not scorer.alive():
            raise RuntimeError(f"scorer exited ({scorer.returncode}):\n{scorer.log_tail()}")
        return ctx.caught_up(group, topics.claims, expected=len(messages))

    # Generous: a loaded machine (CI beside other jobs) starts workers slowly.
    drain_s = wait_until(done, timeout_s=300, what="scorer caught up")
    outcomes = read_outcomes(stack.bootstrap, topics.decisions, topics.deadletter)
    exactly = check_exactly_once(good_ids, outcomes.decided_ids())
    letters = check_dead_letters(sent, outcomes.dead_letters, topics.claims)
    alive = scorer.alive()
    scorer.stop()
    kinds = kinds_delivered(sent)
    handled = kinds_dead_lettered(letters["per_kind"])
    checks = {
        "at_least_12_kinds_sent": len(kinds) >= 12,
        "every_kind_sent_dead_lettered": set(kinds) <= set(handled),
        "all_sent": not undelivered,
        "every_bad_one_dead_lettered_with_reason": not letters["problems"],
        "dead_letters_only_for_bad_ones": (letters["good_dead_lettered"] == 0
                                           and len(outcomes.dead_letters) == len(bad)),
        "every_good_one_decided_once": exactly.ok,
        "outputs_keep_their_contract": not outcomes.invalid and outcomes.key_mismatches == 0,
        "scorer_still_running": alive,
    }
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"{len(bad)} bad messages of {len(kinds)} kinds sent ({len(handled)} kinds "
                 f"dead-lettered correctly) -> "
                 f"{len(outcomes.dead_letters)} dead letters; {len(good_ids)} good claims -> "
                 f"{exactly.tally()}"),
        counts={"good": len(good_ids), "bad": len(bad), "kinds": len(kinds),
                "dead_letters": len(outcomes.dead_letters), **exactly.counts(),
                "invalid_outputs": len(outcomes.invalid)},
        figures={"produce_to_caught_up_s": round(time.monotonic() - started, 2),
                 "drain_after_produce_s": round(drain_s, 2)},
        checks=checks,
        details={"kinds_sent": kinds, "kinds_dead_lettered": handled,
                 "catalogue": sorted(POISON_KINDS), "per_kind": letters["per_kind"],
                 "problems": letters["problems"][:30], "invalid": outcomes.invalid[:10],
                 "undelivered": [f"{s.poison.kind}: {s.error}" for s in undelivered[:10]]},
    )
