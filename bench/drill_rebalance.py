"""Drill 4: two scorer workers share the stream; one is killed.

Two ``claimflow score`` processes in one consumer group split the partitions. Mid-stream,
one of them (chosen by the seed) is killed with SIGKILL: it cannot leave the group, so the
group notices only when its session times out. Pass when the survivor owns every partition
within 10 s of the kill, commits progress on the partitions it inherited, and every claim is
decided exactly once.
"""

from __future__ import annotations

import logging
import random
import time

from bench.drill_common import DrillContext, DrillResult, group_assignment, verdict, wait_until
from bench.drill_stream import Stream

logger = logging.getLogger(__name__)

NUMBER = 4
NAME = "worker-killed-rebalance"
TAKEOVER_GOAL_S = 10.0


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    rate, seconds = (600.0, 15.0) if smoke else (2_500.0, 60.0)
    rows = int(rate * seconds)
    stream = Stream(ctx, "d4", rows=rows, rate=rate)
    bootstrap = ctx.stack.bootstrap
    workers = {name: stream.start_scorer(name) for name in ("a", "b")}
    client_ids = {name: f"{stream.worker_prefix(name)}-0" for name in workers}
    stream.start_producer()
    rng = random.Random(ctx.seed)
    victim = rng.choice(sorted(workers))
    survivor = next(name for name in workers if name != victim)
    everything = {(stream.topics.claims, p) for p in range(stream.partitions)}

    def owners() -> dict[str, set[tuple[str, int]]]:
        try:
            return {cid: set(parts) for cid, parts in group_assignment(bootstrap,
                                                                       stream.group).items()}
        except Exception as exc:  # the coordinator may be busy rebalancing: ask again
            logger.debug("group not described: %s", exc)
            return {}

    def both_busy() -> bool:
        now = owners()
        return all(now.get(cid) for cid in client_ids.values())

    split_s = wait_until(both_busy, 120, interval_s=0.2, what="both workers own partitions")
    before = owners()
    inherited = before.get(client_ids[victim], set())
    stream.wait_committed(rows * rng.uniform(0.2, 0.4), timeout_s=300,
                          watch=list(workers.values()))
    progress = ctx.progress(stream.group, stream.topics.claims)
    at_kill = progress.per_partition()
    t_kill = time.monotonic()
    workers[victim].kill()

    def survivor_owns_all() -> bool:
        now = owners()
        return set(now) == {client_ids[survivor]} and now[client_ids[survivor]] == everything

    takeover_s = None
    try:
        wait_until(survivor_owns_all, 60, interval_s=0.1, what="survivor owns every partition")
        takeover_s = time.monotonic() - t_kill
    except TimeoutError:
        logger.error("the survivor did not take every partition within 60 s")

    def inherited_moving() -> bool:
        now = progress.per_partition()
        return all(now.get(p, -1) > at_kill.get(p, -1) for _, p in inherited)

    resumed_s = None
    try:
        wait_until(inherited_moving, 120, interval_s=0.1, what="inherited partitions progress")
        resumed_s = time.monotonic() - t_kill
    except TimeoutError:
        logger.error("the inherited partitions did not progress")
    finish = stream.finish(timeout_s=300 if smoke else 600)
    alive = workers[survivor].alive()
    sent, outcomes, exactly = stream.verify()
    for proc in workers.values():
        proc.stop()
    checks = {
        **stream.verdict_checks(sent, outcomes, exactly),
        "both_workers_shared_the_partitions": bool(inherited),
        f"survivor_owns_all_within_{TAKEOVER_GOAL_S:.0f}s": (takeover_s is not None
                                                             and takeover_s <= TAKEOVER_GOAL_S),
        "inherited_partitions_progress": resumed_s is not None,
        "survivor_running": alive,
        "producer_succeeded": finish["producer_exit"] == 0,
    }
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"worker {victim} killed; worker {survivor} owned all "
                 f"{len(everything)} partitions after {_s(takeover_s)} and committed on the "
                 f"{len(inherited)} inherited ones after {_s(resumed_s)}; {len(sent)} claims -> "
                 f"{exactly.tally()}"),
        counts={**exactly.counts(), "sent": len(sent), "dead_letters": len(outcomes.dead_letters),
                "partitions": len(everything), "inherited": len(inherited)},
        figures={"takeover_s": None if takeover_s is None else round(takeover_s, 2),
                 "inherited_progress_after_kill_s": None if resumed_s is None
                 else round(resumed_s, 2),
                 "initial_split_s": round(split_s, 1), "input_rate": rate, **finish},
        checks=checks,
        details={"assignment_before_kill": {cid: sorted(p for _, p in parts)
                                            for cid, parts in before.items()},
                 "victim": victim, "invalid": outcomes.invalid[:10]},
    )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"
