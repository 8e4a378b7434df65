"""Drill 3: the broker is killed (SIGKILL) mid-stream and started again.

The drill's own broker (never the shared one) is SIGKILLed while the producer streams, the
scorer scores and the gateway serves (it produces its claims to the same input topic and
answers with the scorer's decisions), with commits advancing (so the scorer has a
transaction open: it commits one per batch, continuously): no controlled shutdown, no
flushed segments, transactions left open. It stays down a while, then starts again on the
same ports with its data. Nobody restarts any component. Pass when every streamed
claim is decided exactly once, the producer delivered everything, the scorer and gateway
are still the processes that were started before the outage, and a claim submitted to the
gateway is decided (by the scorer) again.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

import httpx

from bench.drill_common import DrillContext, DrillResult, verdict, wait_until
from bench.drill_stream import Sampler, Stream, first_progress, steady_after

logger = logging.getLogger(__name__)

NUMBER = 3
NAME = "broker-restart"


def gateway_claim(claim_id: str, submitted_at: datetime) -> dict[str, object]:
    return {"claim_id": claim_id, "claim_amount": 812.5, "num_services": 3, "patient_age": 47,
            "provider_id": 12, "days_since_last_claim": 40,
            "submitted_at": submitted_at.isoformat()}


def submit_until_accepted(url: str, claim_id: str, timeout_s: float) -> tuple[float, list[int]]:
    """POST one claim until the gateway answers with its decision (503 while the broker is
    away, or 202 while the scorer catches up, is fine: the same claim is retried)."""
    statuses: list[int] = []
    body = gateway_claim(claim_id, datetime.now(UTC))

    def accepted() -> bool:
        try:
            status = httpx.post(f"{url}/api/v1/claims", json=body, timeout=40).status_code
        except httpx.HTTPError:
            status = -1
        statuses.append(status)
        return status in (200, 201)

    return wait_until(accepted, timeout_s, interval_s=1.0, what="gateway accepts again"), statuses


def committing(samples: list[tuple[float, int]], now: float, window_s: float = 1.5) -> bool:
    """Did the committed count rise in the last ``window_s``? Then transactions are in flight
    (the scorer opens the next one as soon as it commits one)."""
    recent = [count for t, count in samples if t >= now - window_s]
    return len(recent) >= 2 and recent[-1] > recent[0]


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    # Away longer than the scorer's transaction timeout (10 s by default), at every size: a
    # shorter outage passes or fails by chance, depending on how fast the machine restarts
    # the broker; a real restart takes that long anyway.
    down_s, rate, before_s, after_s = (12.0, 500.0, 5.0, 10.0) if smoke else \
        (20.0, 2_000.0, 15.0, 30.0)
    rows = int(rate * (before_s + after_s))
    stack = ctx.stack
    stream = Stream(ctx, "d3", rows=rows, rate=rate)
    scorer = stream.start_scorer("w")
    gateway = stack.start_gateway(stream.topics, name="d3-gateway")
    scorer_pid, gateway_pid = scorer.pid, gateway.process.pid
    sampler = Sampler(stream).start()
    stream.start_producer()
    gateway_ids = [f"G3-{uuid.uuid4().hex[:10]}", f"G3-{uuid.uuid4().hex[:10]}"]
    try:
        stream.wait_committed(rate * 2, timeout_s=120, watch=[scorer])
        _, before_statuses = submit_until_accepted(gateway.url, gateway_ids[0], 30)
        time.sleep(before_s * 0.4)  # part of the stream flows before the outage
        moving_at_kill = committing(list(sampler.samples), sampler.now())
        t_stop = sampler.now()
        stop_s = stack.kill_broker()
        time.sleep(down_s)  # the broker stays away
        t_start = sampler.now()
        start_s = stack.start_broker()
        t_back = sampler.now()
        gateway_back_s, after_statuses = submit_until_accepted(gateway.url, gateway_ids[1], 120)
        finish = stream.finish(timeout_s=300 if smoke else 600)
        # The gateway's own outcome view must follow the restarted broker too.
        view_s = wait_until(
            lambda: httpx.get(f"{gateway.url}/api/v1/claims/{gateway_ids[1]}",
                              timeout=10).status_code == httpx.codes.OK,
            60, interval_s=0.5, what="gateway outcome view sees the new decision")
    finally:
        samples = sampler.stop()
    # Counted from the first count the coordinator gives once the broker is back: the
    # commits of the second before the broker went down were not sampled before it did.
    back_counts = [count for t, count in samples if t > t_back]
    base = back_counts[0] if back_counts else None
    resumed = first_progress(samples, t_back, base=base)
    # A first commit may still be followed by another stall (a producer to replace).
    steady = steady_after(samples, t_back, base=base)
    # The gateway's claims are in the input topic too, decided by the scorer like the rest.
    sent, outcomes, exactly = stream.verify()
    produced = [cid for cid in sent if cid not in gateway_ids]
    gateway_decisions = [d.claim_id for d in outcomes.decisions if d.claim_id in gateway_ids]
    scorer_same = scorer.alive() and scorer.pid == scorer_pid
    gateway_same = gateway.process.alive() and gateway.process.pid == gateway_pid
    scorer.stop()
    gateway.process.stop()
    checks = {
        **stream.verdict_checks(produced, outcomes, exactly),
        "producer_delivered_everything": finish["producer_exit"] == 0,
        "killed_while_committing": moving_at_kill,
        "scorer_never_restarted": scorer_same,
        "gateway_never_restarted": gateway_same,
        "gateway_decides_again": sorted(gateway_decisions) == sorted(gateway_ids),
    }
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"broker SIGKILLed mid-stream, down {t_back - t_stop:.1f} s ({stop_s:.1f} s to "
                 f"die + {down_s:.0f} s "
                 f"away + {start_s:.1f} s start); {len(sent)} claims (2 through the gateway) "
                 f"-> {exactly.tally()}; no component restarted by hand: "
                 f"{scorer_same and gateway_same}"),
        counts={**exactly.counts(), "sent": len(sent), "dead_letters": len(outcomes.dead_letters),
                "gateway_decisions": len(gateway_decisions)},
        figures={"broker_kill_s": round(stop_s, 1), "broker_away_s": down_s,
                 "broker_start_s": round(start_s, 1),
                 "scorer_first_commit_after_broker_back_s": None if resumed is None
                 else round(resumed - t_back, 2),
                 "scorer_steady_after_broker_back_s": None if steady is None
                 else round(steady - t_back, 2),
                 "gateway_accepting_after_broker_back_s": round(gateway_back_s, 1),
                 "gateway_view_after_broker_back_s": round(view_s, 1),
                 "input_rate": rate, **finish},
        checks=checks,
        details={"timeline_s": {"stop": round(t_stop, 2), "start": round(t_start, 2),
                                "back": round(t_back, 2)},
                 "gateway_statuses": {"before": before_statuses, "after": after_statuses[:40]},
                 "invalid": outcomes.invalid[:10]},
    )
