"""Pure parts of the fault drills: the exactly-once check, throughput windows, the poison
catalogue (judged by the scorer's own routing core), and the harness's process handling."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.drill_broker_restart import committing
from bench.drill_common import (
    DrillResult,
    check_exactly_once,
    throughput_windows,
    verdict,
    wait_until,
)
from bench.drill_kill_scorer import kill_along, kill_plan, mark_resumed
from bench.drill_poison import (
    POISON_KINDS,
    Sent,
    build_flood,
    check_dead_letters,
    keeps_original,
    kinds_dead_lettered,
    kinds_delivered,
)
from bench.drill_stream import (
    drained_at,
    first_progress,
    first_time,
    normal_lag,
    steady_after,
    steady_rate,
)
from bench.drills import DRILLS, merge_reports, parse_args
from bench.drills import render_markdown as render_drills_markdown
from bench.stack_harness import ManagedProcess, Stack, Topics, free_port
from schemas import DeadLetter, StreamSource
from scorer.routing import split_batch
from tests.fake_message import FakeMessage

# --------------------------------------------------------------------------- exactly once


def test_exactly_once_holds_when_each_claim_is_decided_once() -> None:
    report = check_exactly_once(["a", "b", "c"], ["c", "a", "b"])
    assert report.ok
    assert report.counts()["decided"] == 3


def test_exactly_once_names_duplicates_missing_and_unexpected() -> None:
    report = check_exactly_once(["a", "b", "c", "d"], ["a", "a", "b", "x"])
    assert not report.ok
    assert report.duplicates == {"a": 2}
    assert report.missing == ["c", "d"]
    assert report.unexpected == ["x"]
    counts = report.counts()
    assert (counts["expected"], counts["decided"], counts["unique"]) == (4, 4, 3)
    assert counts["missing_sample"] == ["c", "d"]
    assert report.tally() == "4 decisions (3 unique)"
    assert report.full_tally() == "4 decisions, 3 unique, 1 duplicated, 2 missing"


def test_same_count_is_not_enough_for_exactly_once() -> None:
    # 3 decisions for 3 claims, but one doubled and one missing.
    assert not check_exactly_once(["a", "b", "c"], ["a", "a", "b"]).ok


def test_verdict_needs_at_least_one_check() -> None:
    assert verdict({"x": True, "y": True})
    assert not verdict({"x": True, "y": False})
    assert not verdict({})


def test_result_line_names_failed_checks() -> None:
    result = DrillResult(number=4, name="rebalance", passed=False, summary="2 of 3",
                         checks={"takeover_within_10s": False, "nothing_lost": True})
    assert result.line() == "drill 4 rebalance: FAIL (failed: takeover_within_10s) - 2 of 3"
    assert result.as_dict()["checks"] == {"takeover_within_10s": False, "nothing_lost": True}


# --------------------------------------------------------------------------- waiting, rates


def test_wait_until_returns_elapsed_or_times_out() -> None:
    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), timeout_s=5, interval_s=0.01) >= 0
    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout_s=0.05, interval_s=0.01, what="never")


def test_throughput_windows_use_the_sample_a_window_back() -> None:
    samples = [(0.0, 0), (0.5, 50), (1.0, 100), (1.5, 100), (2.0, 100), (2.5, 400)]
    rates = throughput_windows(samples, window_s=1.0)
    assert rates == [(1.0, 100.0), (1.5, 50.0), (2.0, 0.0), (2.5, 300.0)]
    assert throughput_windows([(0.0, 0), (0.4, 10)], window_s=1.0) == []


# --------------------------------------------------------------------------- poison


def test_poison_catalogue_has_at_least_twelve_kinds() -> None:
    assert len(POISON_KINDS) >= 12
    for required in ("not_json_text", "binary_junk", "empty_value", "amount_as_string",
                     "missing_amount", "extra_label_field", "nan_amount", "negative_amount",
                     "huge_payload", "wrong_schema_version"):
        assert required in POISON_KINDS


def test_flood_is_deterministic_and_interleaved() -> None:
    first, good = build_flood(rounds=2, good_per_round=5, seed=3, run_id="r")
    again, _ = build_flood(rounds=2, good_per_round=5, seed=3, run_id="r")
    assert [(m.kind, m.key, m.value) for m in first] == [(m.kind, m.key, m.value) for m in again]
    assert len(good) == 10 == len(set(good))
    assert len(first) == 2 * (5 + len(POISON_KINDS))
    kinds = [m.kind for m in first[: len(first) // 2]]
    assert kinds.count("good") == 5  # each round holds its good claims and all poison kinds
    assert kinds != sorted(kinds)


def test_scorer_routing_accepts_every_good_claim_and_classifies_every_poison() -> None:
    """The drill's expectations hold against the scorer's real routing core."""
    messages, good = build_flood(rounds=1, good_per_round=20, seed=11, run_id="u")
    fakes = [FakeMessage(m.value, _offset=offset, _key=m.key) for offset, m in enumerate(messages)]
    batch = split_batch(fakes, max_bytes=16_384, now=datetime.now(UTC))
    assert [c.claim_id for c in batch.claims] == [m.key.decode() for m in messages
                                                  if m.kind == "good" and m.key]
    assert sorted(c.claim_id for c in batch.claims) == sorted(good)
    by_offset = {r.letter.source.offset: r.letter for r in batch.rejected}
    for offset, message in enumerate(messages):
        if message.kind == "good":
            assert offset not in by_offset
            continue
        letter = by_offset[offset]
        assert letter.error_kind in message.expected, (message.kind, letter.error)
        assert keeps_original(letter.original_value, message.value or b"", letter.error_kind)


def test_only_a_too_large_message_may_keep_just_its_first_bytes() -> None:
    assert keeps_original(b"abc", b"abc", "not_json")
    assert not keeps_original(b"ab", b"abc", "not_json")
    assert keeps_original(b"ab", b"abc", "too_large")
    assert not keeps_original(b"", b"abc", "too_large")
    assert not keeps_original(b"xb", b"abc", "too_large")


def test_dead_letter_check_matches_by_position_and_reports_problems() -> None:
    messages, _ = build_flood(rounds=1, good_per_round=1, seed=5, run_id="c")
    sent = [Sent(m, partition=0, offset=i) for i, m in enumerate(messages)]
    now = datetime.now(UTC)
    letters = [
        DeadLetter.for_message(value=s.poison.value, key=s.poison.key,
                               error_kind=sorted(s.poison.expected)[0], error="bad",
                               source=StreamSource(topic="claims", partition=0, offset=s.offset),
                               failed_at=now)
        for s in sent if s.poison.kind != "good"
    ]
    ok = check_dead_letters(sent, letters, "claims")
    assert ok["problems"] == []
    assert ok["good_dead_lettered"] == 0
    assert all(v == {"ok": 1, **{k: 1 for k in v if k.startswith("kind:")}}
               for v in ok["per_kind"].values())
    missing = check_dead_letters(sent, letters[1:], "claims")
    assert len(missing["problems"]) == 1
    assert "0 dead letters" in missing["problems"][0]


# --------------------------------------------------------------------------- harness


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = {free_port() for _ in range(5)}
    assert len(ports) >= 4
    assert all(1024 < p < 65536 for p in ports)


def test_topics_are_fresh_per_drill() -> None:
    a, b = Topics.fresh("d1"), Topics.fresh("d1")
    assert a.claims != b.claims
    assert a.all == [a.claims, a.approved, a.investigate, a.deadletter]
    assert a.decisions == [a.approved, a.investigate]


def test_stack_env_keeps_the_callers_component_settings_out(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("SCORER_GROUP_ID", "someone-elses")
    stack = Stack(deadline_s=60, home=tmp_path)
    env = stack.env({"SCORER_GROUP_ID": "mine"})
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == stack.bootstrap != "127.0.0.1:9092"
    assert env["KAFKA_PORT"] == str(stack.kafka_port)
    assert env["KAFKA_CONTROLLER_PORT"] == str(stack.controller_port)
    assert stack.kafka_port not in (9092, 9093)
    assert env["CLAIMFLOW_HOME"] == str(tmp_path)
    assert env["SCORER_GROUP_ID"] == "mine"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    stack.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


CHILD_SPAWNER = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _spawn_with_child(tmp_path: Path, name: str) -> tuple[ManagedProcess, int]:
    proc = ManagedProcess(name, [sys.executable, "-c", CHILD_SPAWNER], dict(os.environ),
                          tmp_path / f"{name}.log").start()
    child = int(wait_for_line(proc.log_path))
    return proc, child


def wait_for_line(path: Path, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip().isdigit()]
        if lines:
            return lines[0]
        time.sleep(0.05)
    raise TimeoutError(f"nothing written to {path}")


def test_kill_takes_the_whole_process_group(tmp_path: Path) -> None:
    proc, child = _spawn_with_child(tmp_path, "victim")
    assert proc.alive()
    proc.kill()
    assert not proc.alive()
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: not _pid_alive(child), timeout_s=10, interval_s=0.05)


def test_stack_close_stops_every_process_it_started(tmp_path: Path) -> None:
    stack = Stack(deadline_s=60, home=tmp_path)
    with stack:
        procs = [stack.spawn(f"p{i}", argv=[sys.executable, "-c", CHILD_SPAWNER])
                 for i in range(2)]
        children = [int(wait_for_line(p.log_path)) for p in procs]
    assert not any(p.alive() for p in procs)
    wait_until(lambda: not any(_pid_alive(c) for c in children), timeout_s=10,
               interval_s=0.05)


@pytest.fixture(params=["sigint-default", "sigint-ignored"])
def inherited_sigint(request: pytest.FixtureRequest) -> Iterator[object]:
    """SIGINT as the process got it: handled, or ignored as a shell's background job
    (`make drills &`) inherits it. The original handler comes back afterwards."""
    original = signal.getsignal(signal.SIGINT)
    if request.param == "sigint-ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, original)


def test_stack_watchdog_interrupts_a_drill_that_overruns(
        tmp_path: Path, inherited_sigint: object) -> None:
    stack = Stack(deadline_s=0.3, home=tmp_path)
    procs: list[ManagedProcess] = []

    def overrunning_drill() -> None:
        with stack:
            procs.append(stack.spawn("sleeper",
                                     argv=[sys.executable, "-c", "import time; time.sleep(60)"]))
            threading.Event().wait(10)  # the drill hangs; the watchdog must cut it short

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        overrunning_drill()
    assert time.monotonic() - started < 9
    assert not procs[0].alive()
    assert signal.getsignal(signal.SIGINT) == inherited_sigint  # given back on close


def test_drills_cli_selects_by_number() -> None:
    assert sorted(DRILLS) == [1, 2, 3, 4, 5, 6, 7]
    args = parse_args(["--smoke", "--only", "5", "7"])
    assert args.only == [5, 7]
    with pytest.raises(SystemExit):
        parse_args(["--only", "8"])


HARNESS_THAT_DIES = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from bench.stack_harness import Stack\n"
    "stack = Stack(deadline_s=120, home=Path(sys.argv[1])).__enter__()\n"
    "p = stack.spawn('victim', argv=[sys.executable, '-c', sys.argv[2]])\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_reaper_cleans_up_after_a_harness_killed_with_sigkill(tmp_path: Path) -> None:
    """A test timeout or an OOM kill of the drill process must not leave components behind."""
    harness = ManagedProcess(
        "harness", [sys.executable, "-c", HARNESS_THAT_DIES, str(tmp_path / "home"),
                    CHILD_SPAWNER],
        dict(os.environ), tmp_path / "harness.log").start()
    component = int(wait_for_line(harness.log_path))
    victim_log = tmp_path / "home" / "harness-logs" / "victim.log"
    wait_until(victim_log.exists, timeout_s=20, interval_s=0.05)
    grandchild = int(wait_for_line(victim_log))
    assert _pid_alive(component)
    assert _pid_alive(grandchild)
    # SIGKILL: no close(), no atexit. The components live in their own sessions, so only
    # the reaper can take them down now.
    harness.kill()
    wait_until(lambda: not _pid_alive(component) and not _pid_alive(grandchild),
               timeout_s=30, interval_s=0.1, what="components reaped")


# --------------------------------------------------------------------------- stream helpers


def test_kill_plan_is_seeded_ordered_and_inside_the_stream() -> None:
    plan = kill_plan(200_000, 5, seed=1)
    assert plan == kill_plan(200_000, 5, seed=1)
    assert plan != kill_plan(200_000, 5, seed=2)
    targets = [target for target, _ in plan]
    assert targets == sorted(targets)
    assert all(10_000 <= t <= 170_000 for t in targets)
    assert all(0 <= delay <= 0.6 for _, delay in plan)


class KillableStream:
    """The stream calls of the kill loop: committed progress jumps to each target at once."""

    def __init__(self) -> None:
        self.count = 0
        self.started: list[FakeScorer] = []
        self.waited: list[float] = []

    def wait_committed(self, target: float, timeout_s: float, watch: list[Any]) -> None:
        self.waited.append(target)
        self.count = int(target) + 7

    def committed(self) -> int:
        return self.count

    def start_scorer(self, name: str) -> FakeScorer:
        self.started.append(FakeScorer())
        return self.started[-1]


class FakeScorer:
    killed = False

    def kill(self) -> None:
        self.killed = True


def test_kill_along_kills_each_scorer_once_and_records_what_it_had_committed() -> None:
    stream, first = KillableStream(), FakeScorer()
    clock = iter([1.5, 4.25])
    sampler = type("Clock", (), {"now": lambda self: next(clock)})()
    last, moments = kill_along(stream, sampler, [(100, 0.0), (300, 0.0)],  # type: ignore[arg-type]
                               first)  # type: ignore[arg-type]
    assert [first.killed, *(s.killed for s in stream.started)] == [True, True, False]
    assert stream.started.index(last) == 1  # type: ignore[arg-type]
    assert moments == [
        {"t_s": 1.5, "committed_at_kill": 107, "target": 100, "delay_s": 0.0},
        {"t_s": 4.25, "committed_at_kill": 307, "target": 300, "delay_s": 0.0}]
    mark_resumed(moments, [(1.0, 107), (2.0, 107), (3.0, 150), (5.0, 307)])
    assert [m["resumed_after_s"] for m in moments] == [1.5, None]


def test_progress_and_recovery_moments() -> None:
    samples = [(0.0, 0), (1.0, 100), (2.0, 200), (3.0, 200), (4.0, 200), (5.0, 250),
               (6.0, 450)]
    assert first_progress(samples, after=2.5) == 5.0
    assert first_progress(samples, after=0.5, base=150) == 2.0
    assert first_progress(samples, after=6.0) is None
    rates = throughput_windows(samples)
    assert steady_rate(rates, 0.0, 2.0) == 100.0
    assert steady_rate(rates, 10.0, 20.0) is None
    assert first_time(rates, after=3.0, at_least=90.0) == 6.0
    assert first_time(rates, after=3.0, at_least=1_000.0) is None


def test_steady_after_skips_a_first_commit_that_another_stall_follows() -> None:
    # Broker back at 10: one commit at 10.2, stalled until 20, then steady to the end.
    samples = [(9.0, 500), (10.0, 500), (10.2, 600), (12.0, 600), (16.0, 600), (20.0, 900),
               (21.0, 1_500), (22.0, 2_000), (23.0, 2_000), (40.0, 2_000)]
    assert first_progress(samples, after=10.0) == 10.2
    assert steady_after(samples, after=10.0) == 20.0
    # No second stall: steady from the first commit on; pauses after the end do not count.
    smooth = [(10.0, 500), (10.5, 700), (11.5, 1_000), (12.5, 1_200), (30.0, 1_200)]
    assert steady_after(smooth, after=10.0) == 10.5
    assert steady_after(smooth, after=12.5) is None
    assert steady_after(smooth, after=10.0, base=700) == 11.5


def test_drills_markdown_has_a_row_per_drill_with_its_verdict() -> None:
    report = {
        "generated_at": "2026-11-26T20:00:00+00:00", "smoke": False, "seed": 7,
        "machine": {"cpu_model": "Xeon", "cpus": 2, "load_average_start": [1.0, 1.0, 1.0]},
        "drills": [
            DrillResult(number=1, name="kill-scorer", passed=True,
                        summary="5 SIGKILLs -> 200000 decisions",
                        checks={"exactly_once_read_committed": True}).as_dict(),
            DrillResult(number=3, name="broker-restart", passed=False, summary="a | b",
                        checks={"scorer_never_restarted": False},
                        error="TimeoutError: stuck\nthere").as_dict(),
        ],
    }
    lines = render_drills_markdown(report).splitlines()
    assert lines[0].startswith("Fault drills (full sizes), 2026-11-26T20:00:00+00:00, seed 7")
    assert lines[4] == "| 1 | kill-scorer | PASS | 5 SIGKILLs -> 200000 decisions |  |"
    assert lines[5] == ("| 3 | broker-restart | **FAIL** | a \\| b | scorer_never_restarted; "
                        "error: TimeoutError: stuck there |")


def _report(at: str, smoke: bool, drills: dict[int, bool]) -> dict[str, Any]:
    return {
        "generated_at": at, "smoke": smoke, "seed": 7, "passed": all(drills.values()),
        "machine": {"git_commit": f"c-{at}", "load_average_start": [1.0, 1.0, 1.0]},
        "drills": [{**DrillResult(number=n, name=DRILLS[n][1], passed=ok,
                                  summary=f"{n} at {at}").as_dict(), "ran_at": at}
                   for n, ok in drills.items()],
    }


def test_a_run_of_some_drills_replaces_them_and_keeps_the_others() -> None:
    full = _report("T1", False, {1: True, 2: True, 3: False, 4: True, 5: True, 6: True})
    full["drills"] = [{k: v for k, v in d.items() if k != "ran_at"} for d in full["drills"]]
    rerun = _report("T2", False, {3: True})
    merged = merge_reports(full, rerun, selected=[3])
    assert [d["number"] for d in merged["drills"]] == [1, 2, 3, 4, 5, 6]
    assert [d["ran_at"] for d in merged["drills"]] == ["T1", "T1", "T2", "T1", "T1", "T1"]
    assert merged["drills"][0]["git_commit"] == "c-T1"  # stamped from the earlier run
    assert merged["passed"] is True
    assert merged["kept_from_earlier_runs"] == [1, 2, 4, 5, 6]
    assert merged["generated_at"] == "T2"
    markdown = render_drills_markdown(merged)
    assert "Merged from several runs: drills 1, 2, 4, 5, 6 at T1; drill 3 at T2." in markdown


def test_merging_never_mixes_sizes_nor_keeps_a_selected_drill_that_did_not_run() -> None:
    full = _report("T1", False, {1: True, 3: True})
    smoke = _report("T2", True, {3: False})
    assert merge_reports(full, smoke, selected=[3]) is smoke
    interrupted = _report("T3", False, {})
    interrupted["passed"] = False
    merged = merge_reports(full, interrupted, selected=[3])
    assert [d["number"] for d in merged["drills"]] == [1]  # the old drill 3 is not kept
    assert merged["passed"] is False
    assert merge_reports(None, interrupted, selected=[3]) is interrupted


# --------------------------------------------------------------------------- honest drills

def test_poison_kinds_are_counted_from_what_was_delivered_not_the_catalogue() -> None:
    messages, _ = build_flood(1, 2, seed=3, run_id="k")
    sent = [Sent(m, partition=0, offset=i) for i, m in enumerate(messages)]
    assert kinds_delivered(sent) == sorted(POISON_KINDS)
    for record in sent:
        if record.poison.kind in ("binary_junk", "utf16_json"):
            record.error, record.offset = "Broker: message too large", -1
    delivered = kinds_delivered(sent)
    assert "binary_junk" not in delivered
    assert len(delivered) == len(POISON_KINDS) - 2


def test_a_kind_counts_as_dead_lettered_only_when_every_message_of_it_was() -> None:
    per_kind = {"a": {"ok": 3, "kind:contract": 3}, "b": {"ok": 2, "missing": 1},
                "c": {"wrong": 1, "kind:not_json": 1}}
    assert kinds_dead_lettered(per_kind) == ["a"]


def test_recovery_is_measured_when_the_backlog_has_drained_not_at_the_burst() -> None:
    # Steady lag ~200; an outage builds 10,000; the burst starts at 11 s, drains at 15 s.
    lags = [(1.0, 150), (2.0, 200), (3.0, 180), (10.0, 10_000), (11.0, 9_000), (13.0, 4_000),
            (15.0, 190), (16.0, 170)]
    normal = normal_lag(lags, 0.0, 5.0)
    assert normal == 200
    assert drained_at(lags, after=10.0, normal_lag=normal) == 15.0
    assert drained_at(lags, after=16.0, normal_lag=normal) is None
    assert normal_lag(lags, 20.0, 30.0) is None


def test_the_broker_is_killed_only_while_commits_advance() -> None:
    assert committing([(8.0, 100), (9.0, 300), (9.8, 500)], now=10.0) is True
    assert committing([(8.0, 100), (9.0, 500), (9.8, 500)], now=10.0) is False
    assert committing([(9.9, 500)], now=10.0) is False


def test_kill_broker_without_a_broker_is_an_error(tmp_path: Path) -> None:
    from bench.stack_harness import StackError

    with Stack(deadline_s=60, home=tmp_path) as stack, pytest.raises(StackError):
        stack.kill_broker()


# What schemathesis 4.32 reported in drill 6 for GET /api/v1/stats (joined as the drill
# records it): a negative case whose header mutation the drill's own key undid and whose
# undeclared query parameter ("": []) the HTTP client sent as nothing.
ACCEPTED_AS_SENT = (
    "Schemathesis found 1 distinct failure | - ST201 Schema-violating request accepted | "
    "Invalid data should have been rejected | Expected: 400, 401, 403, 404, 405, 406, 409, "
    "415, 422, 428, 429, 5xx | Invalid component: | - query: violates `additionalProperties` "
    "| - header: violates `required` (was X-API-Key) | [200] OK: | `{\"totals\": {}}` | "
    "Reproduce with: | curl -X GET -H 'X-API-Key: [Filtered]' "
    "'http://127.0.0.1:60461/api/v1/stats?bucket_s=3' | (1 sub-exception)")
DECLARED = frozenset({"bucket_s", "buckets"})


def test_a_negative_case_whose_mutations_never_left_the_client_is_no_mismatch() -> None:
    from bench.drill_gateway_fuzz import neutralized_on_the_wire, sent_query_names

    sent = sent_query_names("http://127.0.0.1:60461/api/v1/stats?bucket_s=3")
    assert sent == ["bucket_s"]
    assert neutralized_on_the_wire(ACCEPTED_AS_SENT, DECLARED, sent)


@pytest.mark.parametrize(("failure", "sent"), [
    # the undeclared parameter did reach the server, and was accepted: a real mismatch
    (ACCEPTED_AS_SENT, ["bucket_s", ""]),
    # a declared parameter's invalid value was accepted
    (ACCEPTED_AS_SENT.replace("violates `additionalProperties`", "violates `minimum`"),
     ["bucket_s"]),
    # a body was accepted against its schema
    (ACCEPTED_AS_SENT.replace("- query: violates `additionalProperties`",
                              "- body: violates `type`"), ["bucket_s"]),
    # another check failed (a response that breaks its schema)
    ("Schemathesis found 1 distinct failure | - Response violates schema", ["bucket_s"]),
])
def test_anything_else_accepted_or_failed_stays_a_mismatch(failure: str, sent: list[str]
                                                           ) -> None:
    from bench.drill_gateway_fuzz import neutralized_on_the_wire

    assert not neutralized_on_the_wire(failure, DECLARED, sent)
