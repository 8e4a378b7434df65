"""Pure parts of the member-stage benchmarks: the state they write to the changelog, the
restore log line they read, and the A/B's side commands."""

from __future__ import annotations

from pathlib import Path

from bench.ab_quixstreams import SIDES, side_command
from bench.member_common import build_histories, clone_id, state_records
from bench.member_restore import parse_restored
from features.member import MemberHistory, decode_history, remember
from tests.v2_factory import member_claim as claim


def test_histories_are_what_the_member_stage_keeps_claim_by_claim() -> None:
    claims = [claim("C1", "M1", day=0), claim("C2", "M2", day=1), claim("C3", "M1", day=3)]
    histories = build_histories(claims)
    expected = remember(remember(MemberHistory(), claims[0]), claims[2])
    assert histories == {"M1": expected, "M2": remember(MemberHistory(), claims[1])}


def test_state_records_reach_the_count_with_real_histories_first_then_copies() -> None:
    histories = build_histories([claim("C1", "M1"), claim("C2", "M2", day=2)])
    records = list(state_records(histories, 5))
    keys = [key.decode() for key, _ in records]
    assert keys == ["M1", "M2", "M1x1", "M2x1", "M1x2"]
    assert len(set(keys)) == 5, "every record is a distinct member"
    assert decode_history(records[2][1]) == histories["M1"], "a copy carries the same state"
    assert clone_id("M7", 0) == "M7"
    assert list(state_records({}, 3)) == []


def test_the_restore_line_of_the_worker_log_is_read_as_numbers() -> None:
    log = (
        "2026-12-05 03:30:01 INFO scorer.worker: assigned claims[0..5]\n"
        "2026-12-05 03:30:04 INFO scorer.member_state: restored g.member-state partitions "
        "0,1,2,3,4,5: 1000123 members in 3.42 s\n"
    )
    assert parse_restored(log) == {"topic": "g.member-state", "partitions": [0, 1, 2, 3, 4, 5],
                                   "members": 1_000_123, "seconds": 3.42}
    assert parse_restored("no restore yet") is None


def test_side_commands_name_the_side_and_the_restore_run() -> None:
    quix = next(side for side in SIDES if side.side == "quix")
    command = side_command("/venv/bin/python", quix, "127.0.0.1:1", "t", "o", "g", 10,
                           Path("/tmp/s"))
    assert command[:4] == ["/venv/bin/python", "-m", "bench.ab_member_sides", "quix"]
    assert "--expect-more" not in command
    again = side_command("py", quix, "b", "t", "o", "g", 11, Path("/tmp/s2"), expect_more=1)
    assert again[-2:] == ["--expect-more", "1"]
    assert again[again.index("--claims") + 1] == "11"
