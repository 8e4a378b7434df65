"""The gateway's pure core and its SQLite stores: intake, CSV, fingerprints, idempotency
under concurrency, the outcome view's upsert, positions and counters."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.coalesce import CoalescingScorer
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
from gateway.publisher import Outgoing
from gateway.service import SubmissionService
from gateway.sqlite_util import BackgroundCheckpointer, connect
from schemas import Claim, Decision, ModelRef, StreamSource
from scorer.client import ModelUnavailable
from tests.unit.test_gateway_fakes import FakePublisher, FakeScorer, claim_body
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


def test_submission_store_pending_then_published(tmp_path: Path) -> None:
    with SubmissionStore(tmp_path / "s.db") as store:
        d = decision("X-1")
        store.add_pending([("X-1", "fp", d.to_json())], now_ms=1)
        row = store.get("X-1")
        assert row is not None
        assert not row.published
        assert row.decision() == d
        store.mark_published(["X-1"])
        published = store.get("X-1")
        assert published is not None
        assert published.published
        assert store.get_many([f"Y-{i}" for i in range(1200)] + ["X-1"]).keys() == {"X-1"}


# -- service -------------------------------------------------------------------------------------


class SlowPublisher(FakePublisher):
    """Holds each publish until released, so concurrent submissions overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def publish(self, items: Any, timeout_s: float) -> None:
        self.entered.set()
        assert self.release.wait(10)
        super().publish(items, timeout_s)


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


def test_concurrent_submissions_of_one_claim_publish_once(tmp_path: Path) -> None:
    publisher = SlowPublisher()
    store = SubmissionStore(tmp_path / "s.db")
    service = SubmissionService(FakeScorer(), publisher, store,
                                lambda kind: f"claims.{kind}", 1.0)
    intake = parse_claim(raw(), now=NOW)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(service.submit([intake], None)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    assert publisher.entered.wait(10)
    publisher.release.set()
    for thread in threads:
        thread.join(10)
    assert publisher.claim_ids() == ["C-000001"]
    assert sorted(r[0].replayed for r in results) == [False, True, True, True]
    assert len({r[0].decision.to_json() for r in results}) == 1
    store.close()


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


def test_outgoing_topic_follows_the_decision(tmp_path: Path) -> None:
    publisher = FakePublisher()
    with SubmissionStore(tmp_path / "s.db") as store:
        service = SubmissionService(FakeScorer(), publisher, store,
                                    lambda kind: f"t.{kind}", 1.0)
        service.submit([parse_claim(raw(claim_id="A", claim_amount=99_999.0), now=NOW),
                        parse_claim(raw(claim_id="B"), now=NOW)], "req-1")
    assert [(o.topic, o.decision.claim_id) for o in publisher.published] == [
        ("t.investigate", "A"), ("t.approve", "B")]
    assert all(isinstance(o, Outgoing) for o in publisher.published)


# -- coalescing model calls ----------------------------------------------------------------------


class GatedScorer(FakeScorer):
    """Blocks inside each call until released, so concurrent requests pile up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.batches: list[int] = []

    def score(self, claim: Any) -> Any:
        self.batches.append(1)
        assert self.release.wait(10)
        return super().score(claim)

    def score_batch(self, claims: Any) -> Any:
        self.batches.append(len(claims))
        assert self.release.wait(10)
        return super().score_batch(claims)


def test_concurrent_single_claims_share_model_calls() -> None:
    inner = GatedScorer()
    scorer = CoalescingScorer(inner, max_batch=64, callers=1)
    claims = [Claim.from_json(raw(claim_id=f"Q-{i}", claim_amount=100.0 + 20_000 * (i % 2)))
              for i in range(9)]
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda c=c: results.update({c.claim_id: scorer.score(c)}))
               for c in claims]

    def wait_for(condition: Any) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, (inner.batches, scorer._queue.qsize())
            time.sleep(0.01)  # polling interval, bounded by the deadline

    try:
        threads[0].start()
        wait_for(lambda: inner.batches == [1])  # the first call is in flight (direct) ...
        for thread in threads[1:]:
            thread.start()
        # ... and the others queue behind it: the one caller holds the first of them while it
        # waits for the only call slot, seven more wait in the queue.
        wait_for(lambda: scorer._queue.qsize() == 7)
    finally:
        inner.release.set()
    for thread in threads:
        thread.join(10)
    assert inner.batches == [1, 8]
    assert {cid: r.claim_id for cid, r in results.items()} == {c.claim_id: c.claim_id
                                                              for c in claims}
    assert results["Q-1"].decision == "investigate"
    scorer.close()


def test_an_idle_scorer_calls_from_the_request_thread() -> None:
    threads: list[str] = []

    class RecordingScorer(FakeScorer):
        def score(self, claim: Any) -> Any:
            threads.append(threading.current_thread().name)
            return super().score(claim)

    scorer = CoalescingScorer(RecordingScorer(), callers=2)
    for i in range(3):
        assert scorer.score(Claim.from_json(raw(claim_id=f"D-{i}"))).claim_id == f"D-{i}"
    scorer.close()
    assert threads == [threading.current_thread().name] * 3


def test_coalesced_failures_reach_every_waiting_request() -> None:
    inner = FakeScorer(available=False)
    scorer = CoalescingScorer(inner, callers=2)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            scorer.score(Claim.from_json(raw(claim_id=f"E-{i}")))
        except ModelUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 5
    assert len({id(e) for e in errors}) == 5  # one exception object per request thread
    scorer.close()


class BlockingBatchScorer(FakeScorer):
    """Holds every batch call until released; single claims are answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def score_batch(self, claims: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return super().score_batch(claims)


def batch_of(n: int, prefix: str) -> list[Any]:
    return [parse_claim(raw(claim_id=f"{prefix}-{i}"), now=NOW) for i in range(n)]


def finishes(target: Any, timeout_s: float = 20.0) -> bool:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def test_a_batch_in_its_model_call_blocks_no_other_submission(tmp_path: Path) -> None:
    """The batch used to hold its claim_id locks through the model call: a claim sharing a
    stripe with it waited for the whole call (in every worker: the locks span processes)."""
    scorer = BlockingBatchScorer()
    store = SubmissionStore(tmp_path / "s.db")
    locks = KeyLocks(lock_path=tmp_path / "s.lock")
    service = SubmissionService(scorer, FakePublisher(), store, lambda k: f"claims.{k}", 1.0,
                                locks=locks)
    batch = batch_of(500, "B")
    held = {locks.index(i.claim_id) for i in batch}
    neighbour = next(f"N-{n}" for n in range(10**6) if locks.index(f"N-{n}") in held)
    batch_thread = threading.Thread(target=lambda: service.submit(batch, None))
    batch_thread.start()
    try:
        assert scorer.entered.wait(20)
        single = parse_claim(raw(claim_id=neighbour), now=NOW)
        assert finishes(lambda: service.submit([single], None)), "blocked behind the batch"
    finally:
        scorer.release.set()
        batch_thread.join(30)
    assert store.count() == 501
    store.close()
    locks.close()


class BatchGatedPublisher(FakePublisher):
    """Holds the publication of the batch (claim_ids "B-...") until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def publish(self, items: Any, timeout_s: float) -> None:
        if any(item.decision.claim_id.startswith("B-") for item in items):
            self.entered.set()
            assert self.release.wait(30)
        super().publish(items, timeout_s)


def test_a_publishing_batch_holds_few_of_the_claim_id_stripes(tmp_path: Path) -> None:
    """While it publishes, a 500-claim batch must hold its claims' locks, and only those:
    with 256 stripes it held ~87 % of them, so nearly every other claim waited."""
    publisher = BatchGatedPublisher()
    store = SubmissionStore(tmp_path / "s.db")
    locks = KeyLocks(lock_path=tmp_path / "s.lock")
    service = SubmissionService(FakeScorer(), publisher, store, lambda k: f"claims.{k}", 1.0,
                                locks=locks)
    batch = batch_of(500, "B")
    held = {locks.index(i.claim_id) for i in batch}
    free = [cid for cid in (f"O-{n}" for n in range(100)) if locks.index(cid) not in held]
    assert len(free) >= 95
    batch_thread = threading.Thread(target=lambda: service.submit(batch, None))
    batch_thread.start()
    try:
        assert publisher.entered.wait(20)
        others = [parse_claim(raw(claim_id=cid), now=NOW) for cid in free]
        assert finishes(lambda: service.submit(others, None)), "blocked behind the batch"
    finally:
        publisher.release.set()
        batch_thread.join(30)
    assert sorted(publisher.claim_ids()) == sorted([*free, *(i.claim_id for i in batch)])
    store.close()
    locks.close()
