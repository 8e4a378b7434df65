"""The gateway's pure core and its SQLite stores: intake, CSV, fingerprints, idempotency
under concurrency, the reply board, the outcome view's upsert, positions and counters."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.claim_producer import Position, claim_key
from gateway.csv_claims import CsvFileError, parse_csv
from gateway.idempotency import SubmissionStore
from gateway.intake import (
    InvalidSubmissionError,
    MalformedJsonError,
    parse_batch,
    parse_claim,
)
from gateway.locks import KeyLocks
from gateway.outcome_store import Outcome, OutcomeStore, timeline
from gateway.replies import ReplyBoard, route_reply
from gateway.service import SubmissionService
from gateway.sqlite_util import BackgroundCheckpointer, connect
from schemas import Claim, ClaimV2, DeadLetter, Decision, ModelRef, StreamSource
from schemas.dead_letter import ErrorKind
from tests.fake_message import FakeMessage
from tests.unit.gateway_fakes import FakeStream, claim_body, stream_decision
from tests.v2_factory import v2_claim, without_labels

NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def raw(**overrides: Any) -> bytes:
    return json.dumps(claim_body(**overrides)).encode()


# -- intake --------------------------------------------------------------------------------------


def test_parse_claim_fills_id_and_time_only_when_absent() -> None:
    intake = parse_claim(raw(claim_id=..., submitted_at=...), now=NOW, make_id=lambda: "gw-1")
    assert intake.claim.claim_id == "gw-1"
    assert intake.claim.submitted_at == NOW
    given = parse_claim(raw(), now=NOW)
    assert given.claim.claim_id == "C-000001"
    assert given.claim.submitted_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_fingerprint_ignores_server_filled_time_but_not_client_values() -> None:
    a = parse_claim(raw(submitted_at=...), now=NOW)
    b = parse_claim(raw(submitted_at=...), now=NOW + timedelta(hours=1))
    c = parse_claim(raw(submitted_at=..., patient_age=45), now=NOW)
    d = parse_claim(raw(), now=NOW)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert a.fingerprint != d.fingerprint  # an explicit submitted_at is part of the claim


def test_strict_json_mode_rules_apply() -> None:
    with pytest.raises(InvalidSubmissionError) as caught:
        parse_claim(raw(num_services=2.5, provider_id=True, patient_age="40"), now=NOW)
    assert {tuple(e["loc"]) for e in caught.value.errors} == {
        ("num_services",), ("provider_id",), ("patient_age",)}


def test_integral_floats_are_integers_as_json_schema_says() -> None:
    """The published schema's ``integer`` admits 8.0: a client built from it is not refused."""
    intake = parse_claim(raw(patient_age=8.0, num_services=2.0, schema_version=1.0), now=NOW)
    assert intake.claim.patient_age == 8
    assert isinstance(intake.claim.patient_age, int)
    assert intake.fingerprint == parse_claim(raw(patient_age=8, num_services=2), now=NOW
                                             ).fingerprint
    v2 = without_labels(v2_claim())
    v2["lines"][0]["units"] = float(v2["lines"][0]["units"])
    v2["patient_age"] = 51.0
    assert parse_claim(json.dumps(v2).encode(), now=NOW).claim.patient_age == 51


def test_malformed_and_empty_bodies() -> None:
    for body in (b"", b"{", b"\x00", b"{'a': 1}"):
        with pytest.raises(MalformedJsonError):
            parse_claim(body, now=NOW)


def test_batch_paths_are_indexed() -> None:
    body = json.dumps({"claims": [claim_body(claim_id="A"), claim_body(claim_id="B",
                                                                        patient_age=-3)]})
    with pytest.raises(InvalidSubmissionError) as caught:
        parse_batch(body.encode(), now=NOW, max_batch=10)
    assert caught.value.errors[0]["loc"] == ["claims", 1, "patient_age"]


# -- CSV -----------------------------------------------------------------------------------------


def test_csv_converts_by_field_type_and_keeps_line_numbers() -> None:
    text = ("\ufeffclaim_amount,num_services,patient_age,provider_id,days_since_last_claim,"
            "submitted_at,is_anomaly\n"
            "12.5,2,30,9,4,2026-01-01T00:00:00Z,1\n"
            "\n"
            "12.5,2.5,30,9,4,,0\n")
    first, second = parse_csv(text.encode(), now=NOW, max_rows=10, make_id=lambda: "gw-x")
    assert first.line == 2
    assert first.intake is not None
    assert first.intake.claim.claim_amount == 12.5
    assert first.intake.claim.submitted_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert second.line == 4
    assert second.intake is None
    assert second.error is not None
    assert "num_services" in second.error


def test_csv_rejects_unknown_columns_as_a_whole() -> None:
    with pytest.raises(CsvFileError) as caught:
        parse_csv(b"claim_amount,num_services,patient_age,provider_id,days_since_last_claim,"
                  b"claim_amount\n1,1,1,1,1,1\n", now=NOW, max_rows=10)
    assert caught.value.errors[0]["type"] == "duplicate_column"


CSV_HEADER = b"claim_amount,num_services,patient_age,provider_id,days_since_last_claim\n"


@pytest.mark.parametrize("row", [
    "nan,1,1,1,1", "inf,1,1,1,1", "1_0,1,1,1,1", "12,1_0,1,1,1", "12,\u0661,1,1,1",
    "\uff11\uff12,1,1,1,1", "12,+1,1,1,1", "0x10,1,1,1,1", "12,1,1,1,1e",
])
def test_csv_numbers_are_as_strict_as_json(row: str) -> None:
    """Python's int()/float() take 1_0, non-ASCII digits and nan; a JSON body does not."""
    [line] = parse_csv(CSV_HEADER + row.encode() + b"\n", now=NOW, max_rows=10)
    assert line.intake is None
    assert line.error is not None


def test_csv_numbers_read_as_json_would() -> None:
    [line] = parse_csv(CSV_HEADER + b" 1.5e3 ,2.0,40,7,0\n", now=NOW, max_rows=10)
    assert line.intake is not None
    assert line.intake.claim.claim_amount == 1500.0
    assert line.intake.claim.num_services == 2


def test_csv_row_cap_is_checked_while_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """~100k rows fit in 1 MiB: the file is refused at row cap + 1, without validating the
    rest (before, every row was validated first and the cap checked at the end)."""
    from gateway.intake import claim_from_object as real

    validated = 0

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal validated
        validated += 1
        return real(*args, **kwargs)

    monkeypatch.setattr("gateway.csv_claims.claim_from_object", counting)
    body = CSV_HEADER + b"12.5,1,30,9,4\n" * 20_000
    with pytest.raises(CsvFileError) as caught:
        parse_csv(body, now=NOW, max_rows=5)
    assert caught.value.errors[0]["type"] == "too_long"
    assert caught.value.errors[0]["loc"] == ["line", 7]
    assert validated <= 5


# -- stores --------------------------------------------------------------------------------------


def decision(claim_id: str, kind: str = "approve", at: datetime = NOW,
             version: str = "1") -> Decision:
    claim = Claim.from_json(raw(claim_id=claim_id))
    return Decision(claim=claim, decision=kind,  # type: ignore[arg-type]
                    anomaly_score=0.4, threshold=0.5,
                    model=ModelRef(name="claim-anomaly", version=version), reasons=[],
                    decided_at=at, source=StreamSource(topic="claims", partition=0, offset=0))


def test_outcome_store_upserts_on_claim_id_and_counts_once(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    d = decision("X-1", "investigate")
    outcome = Outcome(d, "claims.investigate", 2, 41, d.to_json())
    assert store.add([outcome], {("claims.investigate", 2): 42}) == 1
    assert store.add([outcome, outcome], {("claims.investigate", 2): 42}) == 0
    assert store.count() == 1
    stats = store.stats(NOW, 60, 2)
    assert stats["totals"]["investigate"] == 1
    assert stats["timeline"][-1]["investigate"] == 1
    assert store.positions() == {("claims.investigate", 2): 42}
    assert store.get("X-1") == d.to_json()
    store.close()


def test_outcome_store_survives_reopening(tmp_path: Path) -> None:
    with OutcomeStore(tmp_path / "o.db") as store:
        d = decision("X-1")
        store.add([Outcome(d, "claims.approved", 0, 0, d.to_json())], {("claims.approved", 0): 1})
    with OutcomeStore(tmp_path / "o.db") as reopened:
        assert reopened.positions() == {("claims.approved", 0): 1}
        assert reopened.page(None, 10, None).items[0]["seq"] == 1


def test_timeline_buckets_are_aligned_and_ignore_out_of_range_rows() -> None:
    start = int(NOW.timestamp()) // 60 * 60
    rows = [(start - 1, "approve", 5), (start, "approve", 2), (start + 61, "investigate", 1),
            (start + 999, "approve", 3)]
    buckets = timeline(rows, start, 60, 2)
    assert [(b["approve"], b["investigate"]) for b in buckets] == [(2, 0), (0, 1)]
    assert buckets[1]["investigation_rate"] == 1.0
    assert buckets[0]["investigation_rate"] == 0.0


def test_submission_store_pending_then_produced_then_decided(tmp_path: Path) -> None:
    with SubmissionStore(tmp_path / "s.db") as store:
        store.add_pending([("X-1", "fp")], now_ms=1)
        row = store.get("X-1")
        assert row is not None
        assert (row.fingerprint, row.produced, row.decision_json) == ("fp", False, None)
        store.mark_produced([("X-1", Position("claims", 2, 17))])
        produced = store.get("X-1")
        assert produced is not None
        assert produced.position == Position("claims", 2, 17)
        d = decision("X-1")
        store.set_decisions([("X-1", d.to_json())])
        store.set_decisions([("X-1", b"a later one is ignored")])
        decided = store.get("X-1")
        assert decided is not None
        assert decided.decision_json == d.to_json()
        store.forget(["X-1"])  # a decided claim is never forgotten
        assert store.get("X-1") is not None
        store.add_pending([("X-2", "fp")], now_ms=1)
        store.forget(["X-2"])
        assert store.get("X-2") is None
        assert store.get_many([f"Y-{i}" for i in range(1200)] + ["X-1"]).keys() == {"X-1"}


def test_claims_are_keyed_as_the_producer_keys_them() -> None:
    v1 = Claim.from_json(raw(claim_id="K-1"))
    v2 = ClaimV2.from_json(json.dumps(without_labels(v2_claim(claim_id="K-2"))))
    assert claim_key(v1) == b"K-1"
    assert claim_key(v2) == v2.member_id.encode() != b"K-2"


# -- the reply board -----------------------------------------------------------------------------


def dead_letter_at(position: Position, kind: ErrorKind = "unsupported_version") -> DeadLetter:
    return DeadLetter.for_message(
        value=raw(), key=b"C-000001", error_kind=kind,
        error="the model refused it", failed_at=NOW,
        source=StreamSource(topic=position.topic, partition=position.partition,
                            offset=position.offset))


def test_a_decision_wakes_every_watch_of_its_claim_id_and_only_those() -> None:
    board = ReplyBoard()
    first, second, other = board.watch(["A"]), board.watch(["A"]), board.watch(["B"])
    assert board.wants("A")
    board.on_decision("A", b"decision-of-A")
    assert first["A"].wake.is_set()
    assert second["A"].decision == b"decision-of-A"
    assert not other["B"].wake.is_set()
    board.on_decision("A", b"a second decision")  # the first one stays
    assert first["A"].decision == b"decision-of-A"
    board.forget([*first.values(), *second.values(), *other.values()])
    assert not board.wants("A")
    assert board.waiting() == 0


def test_a_dead_letter_answers_the_watch_of_its_position_even_when_it_came_first() -> None:
    board = ReplyBoard()
    watches = board.watch(["A", "B"])
    board.locate(watches["A"], Position("claims", 0, 5))
    board.on_dead_letter(dead_letter_at(Position("claims", 0, 5)))
    assert watches["A"].dead_letter is not None
    assert watches["A"].wake.is_set()
    # B's dead letter arrives before the broker's ack told the request where B landed.
    board.on_dead_letter(dead_letter_at(Position("claims", 1, 9)))
    assert watches["B"].dead_letter is None
    board.locate(watches["B"], Position("claims", 1, 9))
    assert watches["B"].dead_letter is not None
    board.forget(watches.values())
    assert board.waiting() == 0


def test_route_reply_matches_decisions_by_key_and_dead_letters_by_content() -> None:
    board = ReplyBoard()
    watches = board.watch(["A"])
    board.locate(watches["A"], Position("claims", 0, 1))
    messages = [FakeMessage(b"{}", _key=b"nobody", _topic="claims.approved"),
                FakeMessage(b"not a dead letter", _key=None, _topic="dl")]
    for msg in messages:
        route_reply(board, msg, "dl")  # type: ignore[arg-type]
    assert not watches["A"].answered
    letter = FakeMessage(dead_letter_at(Position("claims", 0, 1)).to_json(), _key=None,
                         _topic="dl")
    route_reply(board, letter, "dl")  # type: ignore[arg-type]
    assert watches["A"].dead_letter is not None
    answer = FakeMessage(b"{}", _key=b"A", _topic="claims.approved")
    route_reply(board, answer, "dl")  # type: ignore[arg-type]
    assert watches["A"].decision is None  # answered once


def test_a_claim_sent_again_is_answered_by_its_first_outcome_not_its_dead_letter() -> None:
    """The worker sets a repeated claim_id aside (``duplicate_claim_id``); the request that
    produced the copy gets the first claim's decision, correlated by claim_id."""
    board = ReplyBoard()
    watches = board.watch(["A"])
    board.locate(watches["A"], Position("claims", 0, 7))
    copy = dead_letter_at(Position("claims", 0, 7), kind="duplicate_claim_id")
    route_reply(board, FakeMessage(copy.to_json(), _key=None, _topic="dl"), "dl")  # type: ignore[arg-type]
    assert not watches["A"].answered
    route_reply(board, FakeMessage(b"{}", _key=b"A", _topic="claims.approved"), "dl")  # type: ignore[arg-type]
    assert watches["A"].decision == b"{}"


# -- service -------------------------------------------------------------------------------------


class SlowStream(FakeStream):
    """Holds each produce of claims starting with ``gate`` until released, so concurrent
    submissions overlap."""

    def __init__(self, gate: str = "") -> None:
        super().__init__()
        self.gate = gate
        self.entered = threading.Event()
        self.release = threading.Event()

    def produce(self, claims: Any, timeout_s: float) -> list[Position]:
        if any(c.claim_id.startswith(self.gate) for c in claims):
            self.entered.set()
            assert self.release.wait(30)
        return super().produce(claims, timeout_s)


def make_service(tmp_path: Path, stream: FakeStream, timeout_s: float = 10.0,
                 locks: KeyLocks | None = None) -> SubmissionService:
    return SubmissionService(stream, SubmissionStore(tmp_path / "s.db"),
                             OutcomeStore(tmp_path / "o.db"), stream.board, 1.0, timeout_s,
                             locks=locks)


def close(service: SubmissionService) -> None:
    service.store.close()
    service.outcomes.close()
    service.locks.close()


def test_wal_pages_reach_the_database_from_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    writer = connect(path, "NORMAL", autocheckpoint=False)
    writer.execute("CREATE TABLE t (v BLOB)")
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    empty_size = path.stat().st_size
    writer.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(2000)])
    assert path.stat().st_size == empty_size  # every page still waits in the WAL
    checkpointer = BackgroundCheckpointer(path, "NORMAL", interval_s=0.05)
    deadline = time.monotonic() + 20
    while path.stat().st_size < 2000 * 1000:
        assert time.monotonic() < deadline, "the background checkpoint never ran"
        time.sleep(0.02)  # polling interval, bounded by the deadline
    checkpointer.close()
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (2000,)
    writer.close()


def submit_at_once(service: SubmissionService, intake: Any, requests: int
                   ) -> tuple[list[threading.Thread], list[Any]]:
    """``requests`` threads submitting the same claim; their answers land in the list."""
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(service.submit([intake])))
               for _ in range(requests)]
    for thread in threads:
        thread.start()
    return threads, results


def test_concurrent_submissions_of_one_claim_produce_it_once(tmp_path: Path) -> None:
    stream = SlowStream()
    service = make_service(tmp_path, stream)
    threads, results = submit_at_once(service, parse_claim(raw(), now=NOW), 4)
    assert stream.entered.wait(10)
    stream.release.set()
    for thread in threads:
        thread.join(10)
    assert stream.claim_ids() == ["C-000001"]
    assert sorted(r[0].replayed for r in results) == [False, True, True, True]
    assert len({r[0].body for r in results}) == 1
    close(service)


def test_concurrent_submissions_of_a_refused_claim_all_get_its_dead_letter(
    tmp_path: Path,
) -> None:
    """The requests that did not produce the claim watch the position the first one
    recorded: the worker's dead letter answers them too (none waits for the deadline)."""
    stream = SlowStream()
    stream.reads_version, stream.silent = 2, True
    service = make_service(tmp_path, stream, timeout_s=10)
    intake = parse_claim(raw(), now=NOW)
    threads, results = submit_at_once(service, intake, 4)
    assert stream.entered.wait(10)
    stream.release.set()
    deadline = time.monotonic() + 10
    while sum(len(w) for w in stream.board._by_position.values()) < 4:  # all located
        assert time.monotonic() < deadline, "the waiting requests never learnt the position"
        time.sleep(0.01)  # polling interval, bounded by the deadline
    started = time.monotonic()
    stream.answer_all()  # the worker dead-letters the claim (the model refuses v1)
    for thread in threads:
        thread.join(15)
    assert time.monotonic() - started < 5
    assert [r[0].dead_letter is not None for r in results] == [True] * 4
    assert stream.claim_ids() == ["C-000001"]
    assert service.lookup(intake.claim_id) is None  # not decided: the id is free
    close(service)


def test_a_claim_id_conflict_from_the_worker_is_a_conflict(tmp_path: Path) -> None:
    """Another claim under this id was in flight when this one was checked; the worker read
    it first and sets this one aside as ``claim_id_conflict``: the client gets a 409."""
    stream = FakeStream(silent=True)
    service = make_service(tmp_path, stream, timeout_s=10)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(
        service.submit([parse_claim(raw(), now=NOW)], on_conflict="report")))
    thread.start()
    deadline = time.monotonic() + 10
    while not stream.board._by_position:  # located at its position
        assert time.monotonic() < deadline, "the request never learnt its position"
        time.sleep(0.01)  # polling interval, bounded by the deadline
    stream.board.on_dead_letter(dead_letter_at(Position("claims", 0, 0), "claim_id_conflict"))
    thread.join(10)
    [[result]] = results
    assert (result.conflict, result.dead_letter) == (True, None)
    assert service.lookup("C-000001") is None  # the id is the other claim's
    close(service)


def test_key_locks_do_not_deadlock_on_overlapping_batches() -> None:
    locks = KeyLocks(stripes=4)
    done = []

    def take(keys: list[str]) -> None:
        for _ in range(200):
            with locks.hold(keys):
                pass
        done.append(keys)

    threads = [threading.Thread(target=take, args=(keys,)) for keys in
               (["a", "b", "c"], ["c", "b", "a"], ["b", "d"], ["d", "a"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(done) == 4


def test_a_decision_that_went_by_before_the_watch_is_found_in_the_view(
    tmp_path: Path,
) -> None:
    """A replay of a claim in flight starts watching after the decision passed the reply
    consumer: the request finds it in the outcome view (polled every FALLBACK_POLL_S)."""
    stream = FakeStream(silent=True)
    service = make_service(tmp_path, stream, timeout_s=0.01)
    intake = parse_claim(raw(), now=NOW)
    assert service.submit([intake])[0].pending
    d = stream_decision(intake.claim, Position("claims", 0, 0))
    timer = threading.Timer(0.05, lambda: service.outcomes.add(
        [Outcome(d, "claims.approved", 0, 0, d.to_json())], {("claims.approved", 0): 1}))
    timer.start()
    [result] = service.submit([intake], timeout_s=10)
    timer.join()
    assert (result.body, result.replayed) == (d.to_json(), True)
    stored = service.lookup(intake.claim_id)
    assert stored is not None
    assert stored.decision_json == d.to_json()  # kept with the record from now on
    assert stream.claim_ids() == ["C-000001"]
    close(service)


def batch_of(n: int, prefix: str) -> list[Any]:
    return [parse_claim(raw(claim_id=f"{prefix}-{i}"), now=NOW) for i in range(n)]


def finishes(target: Any, timeout_s: float = 20.0) -> bool:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def test_a_batch_waiting_for_its_decisions_blocks_no_other_submission(tmp_path: Path) -> None:
    """The wait for the stream's decisions holds no claim_id lock: a claim sharing a stripe
    with a 500-claim batch is decided while the batch waits."""
    stream = FakeStream()
    locks = KeyLocks(lock_path=tmp_path / "s.lock")
    service = make_service(tmp_path, stream, locks=locks)
    stream.silent = True
    batch = batch_of(500, "B")
    held = {locks.index(i.claim_id) for i in batch}
    neighbour = next(f"N-{n}" for n in range(10**6) if locks.index(f"N-{n}") in held)
    batch_thread = threading.Thread(target=lambda: service.submit(batch, timeout_s=30))
    batch_thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(stream.produced) < 500:
            assert time.monotonic() < deadline, "the batch was never produced"
            time.sleep(0.01)  # polling interval, bounded by the deadline
        stream.silent = False
        single = parse_claim(raw(claim_id=neighbour), now=NOW)
        assert finishes(lambda: service.submit([single])), "blocked behind the batch"
    finally:
        stream.answer_all()
        batch_thread.join(30)
    assert service.store.count() == 501
    close(service)


def test_a_producing_batch_holds_few_of_the_claim_id_stripes(tmp_path: Path) -> None:
    """While it is produced, a 500-claim batch must hold its claims' locks, and only those:
    with 256 stripes it held ~87 % of them, so nearly every other claim waited."""
    stream = SlowStream(gate="B-")
    locks = KeyLocks(lock_path=tmp_path / "s.lock")
    service = make_service(tmp_path, stream, locks=locks)
    batch = batch_of(500, "B")
    held = {locks.index(i.claim_id) for i in batch}
    free = [cid for cid in (f"O-{n}" for n in range(100)) if locks.index(cid) not in held]
    assert len(free) >= 95
    batch_thread = threading.Thread(target=lambda: service.submit(batch))
    batch_thread.start()
    try:
        assert stream.entered.wait(20)
        others = [parse_claim(raw(claim_id=cid), now=NOW) for cid in free]
        assert finishes(lambda: service.submit(others)), "blocked behind the batch"
    finally:
        stream.release.set()
        batch_thread.join(30)
    assert sorted(stream.claim_ids()) == sorted([*free, *(i.claim_id for i in batch)])
    close(service)
