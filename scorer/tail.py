"""``claimflow tail``: the example downstream consumer of the outcome topics.

It reads like a downstream team should: read_committed (only decisions of committed
transactions), every message validated against its published contract, and a message that
breaks the contract reported, never crashed on. Formatting is pure; :func:`run_tail` is
the thin Kafka shell.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message

from claimflow.settings import BACKLOG_READER_CONFIG
from schemas import Claim, ClaimV2, ContractError, DeadLetter, Decision
from scorer.routing import position_of
from scorer.worker_settings import OutcomeName, ScorerSettings

logger = logging.getLogger(__name__)

EXPECTED_DECISION = {"approved": "approve", "investigate": "investigate"}


@dataclass(frozen=True, slots=True)
class Rendered:
    ok: bool
    text: str


@dataclass(slots=True)
class TailSummary:
    shown: int = 0
    invalid: int = 0


def format_decision(decision: Decision) -> str:
    """One line per decision: which claim (and, for v2, whose and from whom), what, how
    unusual, why, and which model said so."""
    top = decision.reasons[0].message if decision.reasons else "no unusual feature"
    return (
        f"{decision.claim_id}{parties_of(decision.claim)}  {decision.decision:<11}  "
        f"score {decision.anomaly_score:.4f} (threshold {decision.threshold:.4f})  {top}  "
        f"[{decision.model.name} v{decision.model.version}]"
    )


def parties_of(claim: Claim | ClaimV2) -> str:
    """Member, provider and the billed total of a v2 claim; v1 claims carry no member."""
    if not isinstance(claim, ClaimV2):
        return ""
    lines = len(claim.lines)
    return (f"  member {claim.member_id}  provider {claim.provider_id}  "
            f"{claim.claim_amount:,.2f} in {lines} line{'s' if lines != 1 else ''}")


def format_dead_letter(letter: DeadLetter) -> str:
    return (
        f"{position_of(letter.source)}  {letter.error_kind}  {letter.error}  "
        f"({len(letter.original_value)} bytes)"
    )


def where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"


def render(outcome: OutcomeName, value: bytes | None, *, as_json: bool) -> Rendered:
    """Validate one message of an outcome topic against its contract and format it."""
    try:
        if outcome == "deadletter":
            letter = DeadLetter.from_json(value or b"")
            text = format_dead_letter(letter)
        else:
            decision = Decision.from_json(value or b"")
            expected = EXPECTED_DECISION[outcome]
            if decision.decision != expected:
                return Rendered(
                    False,
                    f"claim_id={decision.claim_id}: decision {decision.decision!r} "
                    f"on the {outcome} topic",
                )
            text = format_decision(decision)
    except ContractError as exc:
        return Rendered(False, str(exc))
    return Rendered(True, (value or b"").decode() if as_json else text)


def tail_consumer_config(settings: ScorerSettings, *, from_beginning: bool) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # A throwaway group: tail never commits, so it never disturbs anyone's offsets.
        "group.id": f"claimflow-tail-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        **BACKLOG_READER_CONFIG,  # --from-beginning reads a backlog
    }


def run_tail(
    settings: ScorerSettings,
    outcome: OutcomeName,
    *,
    from_beginning: bool,
    as_json: bool,
    max_messages: int | None,
    timeout_s: float | None,
    emit: Callable[[str], None],
    report: Callable[[str], None],
) -> TailSummary:
    """Print messages until ``max_messages`` were read, ``timeout_s`` passed, or Ctrl-C."""
    topic = settings.outcome_topic(outcome)
    consumer = Consumer(tail_consumer_config(settings, from_beginning=from_beginning))
    consumer.subscribe([topic])
    summary = TailSummary()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not done(summary, max_messages, deadline):
            for message in consumer.consume(num_messages=500, timeout=0.2):
                if done(summary, max_messages, deadline):
                    break
                show(message, outcome, as_json, summary, emit, report)
    except KeyboardInterrupt:
        logger.debug("interrupted")
    finally:
        consumer.close()
    return summary


def done(summary: TailSummary, max_messages: int | None, deadline: float | None) -> bool:
    if max_messages is not None and summary.shown + summary.invalid >= max_messages:
        return True
    return deadline is not None and time.monotonic() >= deadline


def show(
    message: Message,
    outcome: OutcomeName,
    as_json: bool,
    summary: TailSummary,
    emit: Callable[[str], None],
    report: Callable[[str], None],
) -> None:
    error = message.error()
    if error is not None:
        report(f"consumer: {error}")
        return
    rendered = render(outcome, message.value(), as_json=as_json)
    if rendered.ok:
        summary.shown += 1
        emit(rendered.text)
    else:
        summary.invalid += 1
        report(f"invalid message at {where(message)}: {rendered.text}")
