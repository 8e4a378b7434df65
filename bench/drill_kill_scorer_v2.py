"""Drill 7: SIGKILL the scorer while v2 claims stream through the member stage.

Drill 1 on contract v2 with member state: a v2-history champion (trained here by the
trainer's ``train`` on ``claimflow generate --profile realistic`` claims, exported to a
home of its own and served by a second ``claimflow serve-model``), ``claimflow produce
--from-file claims.jsonl`` (keyed by member_id) at a steady rate, and the scorer SIGKILLed at
seeded moments (the plan of drill 1) and restarted at once with the same transactional.id:
each restart restores its members from the changelog. Passes when every claim is decided
exactly once in the read_committed view AND every decision equals ``claimflow score-file``'s
for the same file and model (score within 1e-9, same decision): a claim replayed after a
kill saw exactly the member history it would have seen without the kill.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.drill_common import (
    DrillContext,
    DrillResult,
    ExactlyOnceReport,
    Outcomes,
    check_exactly_once,
    read_outcomes,
    read_to_end,
    verdict,
)
from bench.drill_kill_scorer import kill_along, kill_plan, mark_resumed
from bench.drill_stream import Sampler, Stream
from bench.member_common import generate_v2, history_champion
from bench.stack_harness import ManagedProcess, ModelService, free_port

logger = logging.getLogger(__name__)

NUMBER = 7
NAME = "kill-scorer-v2-members"
TOLERANCE = 1e-9


@dataclass
class FileStream(Stream):
    """A drill stream whose producer is ``claimflow produce --from-file`` of a v2 file."""

    data: Path | None = None

    def start_producer(self) -> ManagedProcess:
        assert self.data is not None
        self.producer = self.ctx.stack.spawn(
            f"{self.label}-producer", "produce", "--from-file", str(self.data),
            "--topic", self.topics.claims, "--rate", str(self.rate), "--quiet")
        return self.producer

    def verify(self) -> tuple[list[str], Outcomes, ExactlyOnceReport]:
        """As :meth:`Stream.verify`, but v2 claims are keyed by member_id: the ground truth
        is the claim_id inside each input message."""
        bootstrap = self.ctx.stack.bootstrap
        sent = [str(orjson.loads(msg.value() or b"{}").get("claim_id"))
                for msg in read_to_end(bootstrap, [self.topics.claims])]
        outcomes = read_outcomes(bootstrap, self.topics.decisions, self.topics.deadletter)
        stream_ids = [d.claim_id for d in outcomes.decisions if d.source.kind == "stream"]
        return sent, outcomes, check_exactly_once(sent, stream_ids)


def start_history_service(ctx: DrillContext, home: Path, tag: str) -> ModelService:
    port = free_port()
    proc = ctx.stack.spawn("model-v2", "serve-model", "--port", str(port), env={
        "CLAIMFLOW_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
        "MODEL_TAG": tag, "MODEL_POLL_INTERVAL_S": "0"})
    service = ModelService(proc, f"http://127.0.0.1:{port}", port)
    service.wait_ready(180)
    return service


def offline_answers(ctx: DrillContext, home: Path, tag: str, data: Path
                    ) -> dict[str, dict[str, Any]]:
    """``claimflow score-file`` over the streamed file with the same model."""
    out = home / "scored.jsonl"
    ctx.stack.cli("score-file", "--data", str(data), "--out", str(out), "--model", tag,
                  env={"CLAIMFLOW_HOME": str(home), "BENTOML_HOME": str(home / "bentoml")},
                  timeout_s=900, log_name="score-file")
    answers = (orjson.loads(line) for line in out.read_bytes().splitlines())
    return {answer["claim_id"]: answer for answer in answers}


def compare_with_offline(outcomes: Outcomes, offline: dict[str, dict[str, Any]]
                         ) -> dict[str, Any]:
    """Each streamed decision against score-file's answer for the same claim (pure)."""
    score_diffs: list[str] = []
    decision_diffs: list[str] = []
    worst = 0.0
    for decision in outcomes.decisions:
        answer = offline.get(decision.claim_id)
        if answer is None:
            continue  # counted by the exactly-once check
        diff = abs(decision.anomaly_score - float(answer["anomaly_score"]))
        worst = max(worst, diff)
        if diff > TOLERANCE:
            score_diffs.append(decision.claim_id)
        if decision.decision != answer["decision"]:
            decision_diffs.append(decision.claim_id)
    return {"compared": len(outcomes.decisions), "max_abs_score_diff": worst,
            "score_mismatches": len(score_diffs), "decision_mismatches": len(decision_diffs),
            "samples": (score_diffs + decision_diffs)[:10]}


def run_drill(ctx: DrillContext, smoke: bool) -> DrillResult:
    rows, kills, seconds = (5_000, 1, 10) if smoke else (200_000, 5, 60)
    home = ctx.stack.home / "v2-history"
    home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    champion = history_champion(home, 5_000 if smoke else 20_000,
                                n_estimators=30 if smoke else 100)
    data = generate_v2(home / "stream.jsonl", rows, seed=ctx.seed % 100_000)
    offline = offline_answers(ctx, home, champion.tag, data)
    prepared_s = time.monotonic() - started
    service = start_history_service(ctx, home, champion.tag)
    v2ctx = DrillContext(stack=ctx.stack, model=service, seed=ctx.seed, smoke=smoke)
    try:
        return kill_and_check(v2ctx, data, rows, kills, seconds, offline, prepared_s)
    finally:
        v2ctx.close()
        service.process.stop()


def kill_and_check(ctx: DrillContext, data: Path, rows: int, kills: int, seconds: float,
                   offline: dict[str, dict[str, Any]], prepared_s: float) -> DrillResult:
    stream = FileStream(ctx, "d7", rows=rows, rate=rows / seconds, data=data)
    plan = kill_plan(rows, kills, ctx.seed)
    scorer = stream.start_scorer("w")
    sampler = Sampler(stream).start()
    started = time.monotonic()
    stream.start_producer()
    try:
        scorer, moments = kill_along(stream, sampler, plan, scorer)  # drill 1's kills
        finish = stream.finish(timeout_s=300 if ctx.smoke else 900)
    finally:
        samples = sampler.stop()
    elapsed = time.monotonic() - started
    mark_resumed(moments, samples)
    restores = restore_lines(stream.workers)
    alive = scorer.alive()
    sent, outcomes, exactly = stream.verify()
    scorer.stop()
    same = compare_with_offline(outcomes, offline)
    checks = {
        "all_planned_kills_done": len(moments) == kills,
        **stream.verdict_checks(sent, outcomes, exactly),
        "every_claim_scored_offline": len(offline) == rows,
        "scores_equal_score_file_1e-9": same["score_mismatches"] == 0
        and same["compared"] == rows,
        "decisions_equal_score_file": same["decision_mismatches"] == 0,
        "every_restart_restored_members": len(restores) >= kills
        and all(r["members"] > 0 for r in restores[1:]),
        "producer_succeeded": finish["producer_exit"] == 0,
        "scorer_running_at_end": alive,
    }
    return DrillResult(
        number=NUMBER, name=NAME, passed=verdict(checks),
        summary=(f"{len(moments)} SIGKILLs while {len(sent)} v2 claims streamed through the "
                 f"member stage -> {exactly.full_tally()}; "
                 f"{same['score_mismatches']} scores and {same['decision_mismatches']} "
                 f"decisions differ from score-file (max |diff| "
                 f"{same['max_abs_score_diff']:.1e})"),
        counts={**exactly.counts(), "sent": len(sent), "kills": len(moments),
                "dead_letters": len(outcomes.dead_letters), **same},
        figures={"seconds": round(elapsed, 1), "prepare_s": round(prepared_s, 1),
                 "input_rate": round(stream.rate),
                 "restart_to_first_commit_s": [m["resumed_after_s"] for m in moments],
                 "restores": restores, **finish},
        checks=checks,
        details={"kills": moments, "invalid": outcomes.invalid[:10]},
    )


def restore_lines(workers: list[ManagedProcess]) -> list[dict[str, Any]]:
    """Every "restored ..." line of the drill's worker log (restarts append to it)."""
    from bench.member_restore import RESTORED

    seen: set[Path] = set()
    found = []
    for worker in workers:
        if worker.log_path in seen:
            continue
        seen.add(worker.log_path)
        text = worker.log_path.read_text(encoding="utf-8", errors="replace")
        found += [{"members": int(members), "seconds": float(secs)}
                  for _topic, _parts, members, secs in RESTORED.findall(text)]
    return found
