"""Drill 1: SIGKILL the scorer at random moments while claims stream.

The producer streams at a steady rate; the scorer is killed with SIGKILL (no chance to
finish or abort its batch) at moments drawn from the drill's seed, each time a little after
the group's committed progress crossed a random fraction of the stream, and restarted at
once with the same transactional.id, as a process supervisor would. Pass when every claim
in the input topic has exactly one decision in the read_committed view: no duplicate, no
missing claim_id.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from bench.drill_common import DrillContext, DrillResult, verdict
from bench.drill_stream import Sampler, Stream, first_progress
from bench.stack_harness import ManagedProcess

logger = logging.getLogger(__name__)

NUMBER = 1
NAME = "kill-scorer"


def kill_plan(rows: int, kills: int, seed: int) -> list[tuple[int, float]]:
    """(committed count to pass, extra delay in s) per kill, in order; seeded."""
    rng = random.Random(seed)
    targets = sorted(int(rng.uniform(0.05, 0.85) * rows) for _ in range(kills))
    return [(target, round(rng.uniform(0.0, 0.6), 3)) for target in targets]


def kill_along(stream: Stream, sampler: Sampler, plan: list[tuple[int, float]],
               scorer: ManagedProcess) -> tuple[ManagedProcess, list[dict[str, Any]]]:
    """SIGKILL the scorer at each point of ``plan`` and start a new one at once; returns
    the scorer running at the end and one moment per kill."""
    moments: list[dict[str, Any]] = []
    for target, delay in plan:
        stream.wait_committed(target, timeout_s=300, watch=[scorer])
        # A random moment after the crossing: mid-batch, mid-commit or idle, by chance.
        time.sleep(delay)
        scorer.kill()
        at = sampler.now()
        # What the killed worker had committed: progress beyond it is the new one's.
        committed = stream.committed()
        scorer = stream.start_scorer("w")
        moments.append({"t_s": round(at, 2), "committed_at_kill": committed,
                        "target": target, "delay_s": delay})
    return scorer, moments


def mark_resumed(moments: list[dict[str, Any]], samples: list[tuple[float, int]]) -> None:
    """Each moment's ``resumed_after_s``: from the kill to the first progress beyond what
    the killed worker had committed (None: never)."""
    for moment in moments:
        at = float(moment["t_s"])
        resumed = first_progress(samples, at, int(moment["committed_at_kill"]))
        moment["resumed_after_s"] = None if resumed is None else round(resumed - at, 2)


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    rows, kills, seconds = (5_000, 1, 10) if smoke else (200_000, 5, 60)
    stream = Stream(ctx, "d1", rows=rows, rate=rows / seconds)
    plan = kill_plan(rows, kills, ctx.seed)
    scorer = stream.start_scorer("w")
    sampler = Sampler(stream).start()
    started = time.monotonic()
    stream.start_producer()
    try:
        scorer, moments = kill_along(stream, sampler, plan, scorer)
        finish = stream.finish(timeout_s=300 if smoke else 600)
    finally:
        samples = sampler.stop()
    elapsed = time.monotonic() - started
    mark_resumed(moments, samples)
    alive = scorer.alive()
    sent, outcomes, exactly = stream.verify()
    scorer.stop()
    checks = {
        "all_planned_kills_done": len(moments) == kills,
        **stream.verdict_checks(sent, outcomes, exactly),
        "producer_succeeded": finish["producer_exit"] == 0,
        "scorer_running_at_end": alive,
    }
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"{len(moments)} SIGKILLs while {len(sent)} claims streamed -> "
                 f"{exactly.full_tally()}"),
        counts={**exactly.counts(), "sent": len(sent), "kills": len(moments),
                "dead_letters": len(outcomes.dead_letters)},
        figures={"seconds": round(elapsed, 1), "input_rate": round(stream.rate),
                 "restart_to_first_commit_s": [m["resumed_after_s"] for m in moments],
                 **finish},
        checks=checks,
        details={"kills": moments, "invalid": outcomes.invalid[:10]},
    )
