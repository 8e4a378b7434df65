"""The scoring loop in-process, with a fake consumer, producer, model client and changelog
(tests/fake_kafka.py): what one batch commits, and what every failure leaves behind. The
same paths against a real broker: tests/integration/test_worker.py and test_member_state.py."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from features.member import NO_HISTORY, decode_history
from schemas import DeadLetter
from scorer.loop import FatalWorkerError, describe_batch
from scorer.routing import split_batch
from tests.fake_kafka import (
    CHANGELOG,
    DAY,
    FakeCluster,
    FakeModelClient,
    Harness,
    abortable,
    fast_settings,
    three_claims,
)
from tests.fake_message import FakeMessage
from tests.v1_factory import NOW, claim_bytes


def committed(cluster: FakeCluster) -> dict[tuple[str, int], int]:
    return dict(cluster.committed)


def test_a_batch_becomes_decisions_changelog_and_offsets_in_one_transaction() -> None:
    h = Harness()
    three_claims(h.cluster)
    h.run()

    assert h.cluster.topics[CHANGELOG] == 2  # created with the claims topic's partitions
    assert h.cluster.commits == 1
    assert h.producers.events() == ["init_transactions", "begin_transaction",
                                    "send_offsets_to_transaction", "commit_transaction"]
    assert h.cluster.decisions() == {"C-1": "claims.approved", "C-2": "claims.investigate",
                                     "C-3": "claims.approved"}
    decision = orjson.loads(h.cluster.on("claims.investigate")[0].value)
    assert decision["source"] == {"kind": "stream", "topic": "claims", "partition": 0,
                                  "offset": 1}
    assert [r.key for r in h.cluster.on("claims.investigate")] == [b"C-2"]
    # One changelog record per changed member, on its claims partition.
    changelog = {(r.partition, r.key) for r in h.cluster.on(CHANGELOG)}
    assert changelog == {(0, b"M1"), (1, b"M2")}
    assert committed(h.cluster) == {("claims", 0): 2, ("claims", 1): 1}
    # The offsets were sent with the consumer's group metadata (KIP-447 fencing).
    assert h.producers.made[0].group_metadata == h.consumer.consumer_group_metadata()
    # Member contexts reached the model: C-2 sees C-1 of the same batch.
    [(claims, members)] = h.client.calls
    assert [c.claim_id for c in claims] == ["C-1", "C-2", "C-3"]
    assert members is not None
    assert [m.claims_30d for m in members] == [1.0, 2.0, 1.0]
    # The store took the batch's histories only after the commit.
    state = h.member_state()
    assert set(state[0]) == {"M1"}
    assert set(state[1]) == {"M2"}
    assert h.counter("consumed_total") == 3
    assert h.counter("investigated_total") == 1
    assert h.counter("approved_total") == 2


def test_a_model_outage_rewinds_to_the_batch_start_and_commits_nothing() -> None:
    h = Harness(client=FakeModelClient(unavailable=2))
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    h.run()  # C-1 is retried until the model answers, then committed
    assert h.cluster.decisions() == {"C-1": "claims.approved"}
    before_state, before_offsets = h.member_state(), committed(h.cluster)
    h.cluster.append_claim(0, claim_id="C-2", member_id="M1")
    h.cluster.append_claim(1, claim_id="C-3", member_id="M2")
    h.client.unavailable = 1
    h.consumer.seeks.clear()

    h.next_batch()

    assert h.consumer.seeks == [("claims", 0, 1), ("claims", 1, 0)]  # the batch's first offsets
    assert h.cluster.commits == 1  # still only the first batch's
    assert committed(h.cluster) == before_offsets
    assert h.member_state() == before_state
    assert h.counter("model_unavailable_total") == 3
    h.run()  # the model is back: the same claims, each decided once
    assert h.cluster.decisions() == {"C-1": "claims.approved", "C-2": "claims.approved",
                                     "C-3": "claims.approved"}
    assert h.member_state()[0]["M1"] != before_state[0]["M1"]


def test_an_aborted_transaction_leaves_the_member_store_unchanged_and_rewinds() -> None:
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    h.run()
    before_state = h.member_state()
    h.cluster.append_claim(0, claim_id="C-2", member_id="M1")
    h.cluster.append_claim(1, claim_id="C-3", member_id="M2")
    h.producers.fail("commit_transaction", abortable())
    h.consumer.seeks.clear()

    h.next_batch()

    assert h.producers.events()[-2:] == ["commit_transaction failed", "abort_transaction"]
    assert h.cluster.aborts == 1
    assert h.cluster.decisions() == {"C-1": "claims.approved"}  # nothing of the batch
    assert h.member_state() == before_state
    # Rewound to the committed offsets; partition 1 has none yet: from its beginning.
    assert h.consumer.seeks == [("claims", 0, 1), ("claims", 1, -2)]
    assert h.counter("transactions_aborted_total") == 1
    h.run()
    assert len(h.producers.made) == 1  # an abort needs no new producer
    assert set(h.cluster.decisions()) == {"C-1", "C-2", "C-3"}
    # The redone batch saw the same history as the aborted one: C-2 is M1's second claim.
    assert h.client.calls[-1][1] == h.client.calls[-2][1]
    assert [c.claim_id for c in h.member_state()[1]["M2"].recent] == ["C-3"]


def test_a_lost_sequence_replaces_the_producer_and_redoes_the_batch() -> None:
    h = Harness()
    three_claims(h.cluster)
    h.producers.fail("send_offsets_to_transaction",
                     KafkaError(KafkaError._INCONSISTENT, "2 message(s) failed delivery"))
    h.run()
    assert len(h.producers.made) == 2
    first, second = h.producers.made
    assert first.events[-2:] == ["send_offsets_to_transaction failed", "purge"]
    assert second.events[0] == "init_transactions"  # bumps the epoch, aborts the old one
    assert set(h.cluster.decisions()) == {"C-1", "C-2", "C-3"}
    assert h.cluster.commits == 1


def test_a_producer_failing_again_and_again_is_fatal() -> None:
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    h.producers.fail("commit_transaction", KafkaError(KafkaError.UNKNOWN_PRODUCER_ID), times=6)
    with pytest.raises(FatalWorkerError, match="replaced 5 times without a commit"):
        h.run()
    assert h.cluster.commits == 0
    assert len(h.producers.made) == 6


def test_a_fenced_producer_is_fatal_and_commits_nothing() -> None:
    h = Harness()
    three_claims(h.cluster)
    h.producers.fail("commit_transaction", KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(FatalWorkerError, match=r"newer worker with this transactional\.id"):
        h.run()
    assert h.cluster.commits == 0
    assert h.cluster.records == []
    assert h.member_state() == {0: {}, 1: {}}
    assert len(h.producers.made) == 1  # never fenced back by a producer of ours


def test_a_bare_fatal_from_produce_is_judged_by_its_cause() -> None:
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    h.producers.fail("produce", KafkaError(KafkaError._FATAL, "Local: Fatal error"))
    h.producers.fail("poll", KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
    with pytest.raises(FatalWorkerError, match=r"producer fenced.*newer worker"):
        h.run()
    assert h.cluster.commits == 0


def test_a_rebalance_drops_revoked_state_and_restores_assigned_state() -> None:
    h = Harness()
    three_claims(h.cluster)
    h.run()
    assert h.cluster.restores == [[0, 1]]  # on the first assignment
    state = h.member_state()

    h.consumer.rebalance("revoke", [1])
    h.run()
    assert h.member_state() == {0: state[0]}

    h.consumer.rebalance("assign", [1])
    h.cluster.append_claim(1, claim_id="C-4", member_id="M2", service_date="2026-11-22")
    h.run()
    assert h.cluster.restores[-1] == [1]
    # Restored from the changelog: M2's next claim sees its earlier one.
    claims, members = h.client.calls[-1]
    assert [c.claim_id for c in claims] == ["C-4"]
    assert members is not None
    assert members[0].claims_30d == 2.0
    assert h.consumer.assignment() == [TopicPartition("claims", 0), TopicPartition("claims", 1)]

    h.consumer.rebalance("lost", [0])
    h.run()
    assert 0 not in h.member_state()


def test_a_restored_store_equals_the_store_that_wrote_the_changelog() -> None:
    h = Harness()
    three_claims(h.cluster)
    h.run()
    written = h.member_state()
    h.consumer.rebalance("revoke", [0, 1])
    h.consumer.rebalance("assign", [0, 1])
    h.run()
    assert h.member_state() == written


def dead_letters(h: Harness) -> list[DeadLetter]:
    return [DeadLetter.from_json(r.value) for r in h.cluster.on("claims.deadletter")]


def test_unreadable_input_is_dead_lettered_in_the_batch_transaction() -> None:
    h = Harness()
    h.cluster.append(0, b"{not json", key=b"K-1")
    h.cluster.append(0, b"", key=b"K-2")
    h.cluster.append(0, claim_bytes(patient_age=300), key=b"K-3")
    h.cluster.append(0, b"x" * 20_000, key=b"K-4")
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    h.run()

    letters = dead_letters(h)
    assert [letter.error_kind for letter in letters] == [
        "not_json", "empty", "contract_violation", "too_large"]
    assert [letter.source.offset for letter in letters] == [0, 1, 2, 3]
    assert base64.b64decode(letters[0].original_value_b64) == b"{not json"
    assert [r.key for r in h.cluster.on("claims.deadletter")] == [b"K-1", b"K-2", b"K-3", b"K-4"]
    assert "patient_age" in letters[2].error
    assert h.cluster.decisions() == {"C-1": "claims.approved"}
    assert h.cluster.commits == 1  # dead letters, decision and offsets together
    assert committed(h.cluster) == {("claims", 0): 5}
    assert h.counter("dead_lettered_total") == 4


def test_a_batch_of_dead_letters_only_commits_without_a_model_call() -> None:
    h = Harness()
    h.cluster.append(1, b"[]")
    h.run()
    assert [letter.error_kind for letter in dead_letters(h)] == ["contract_violation"]
    assert h.client.calls == []
    assert committed(h.cluster) == {("claims", 1): 1}


def test_a_claim_the_model_does_not_read_is_dead_lettered_with_its_bytes() -> None:
    h = Harness(client=FakeModelClient(reads=2))
    h.cluster.append(0, claim_bytes(claim_id="C-v1"), key=b"C-v1")
    h.cluster.append_claim(0, claim_id="C-v2", member_id="M1")
    h.run()
    [letter] = dead_letters(h)
    assert letter.error_kind == "unsupported_version"
    assert base64.b64decode(letter.original_value_b64) == claim_bytes(claim_id="C-v1")
    assert h.cluster.decisions() == {"C-v2": "claims.approved"}
    # The v1 claim had no history to send; the v2 claim had its own.
    [(_claims, members)] = h.client.calls
    assert members is not None
    assert members[0] == NO_HISTORY


def test_a_nonsense_answer_from_the_model_is_fatal() -> None:
    h = Harness(client=FakeModelClient(nonsense=True))
    three_claims(h.cluster)
    with pytest.raises(FatalWorkerError, match="model service"):
        h.run()
    assert h.cluster.commits == 0
    assert h.member_state() == {0: {}, 1: {}}


def test_a_fatal_consumer_error_stops_the_loop() -> None:
    h = Harness()
    message = h.cluster.append_claim(0, claim_id="C-1", member_id="M1")
    message._error = KafkaError(KafkaError._FATAL, "consumer broke", fatal=True)
    with pytest.raises(FatalWorkerError, match="consumer"):
        h.run()
    assert h.cluster.commits == 0


def test_batches_are_described_by_their_offset_ranges() -> None:
    batch = split_batch(
        [
            FakeMessage(claim_bytes(), _offset=10, _partition=0),
            FakeMessage(b"bad", _offset=12, _partition=0),
            FakeMessage(claim_bytes(), _offset=3, _partition=2),
        ],
        max_bytes=4096,
        now=NOW,
    )
    assert describe_batch(batch) == "claims[0]@10..12, claims[2]@3..3"


# -- a claim_id is decided once (claim ids live in the member state)


def test_a_claim_sent_again_is_decided_once_and_not_counted_twice() -> None:
    """The gateway's crash window: a claim the broker stored is produced again on a retry
    (with a fresh submitted_at, which the gateway fills in), in the same batch or later."""
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY,
                           submitted_at="2026-11-20T11:00:00Z")
    h.run()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    h.cluster.append_claim(0, claim_id="C-2", member_id="M1", service_date=DAY)
    h.run()

    assert [r.key for r in h.cluster.on("claims.approved", "claims.investigate")] == [
        b"C-1", b"C-2"]
    letters = dead_letters(h)
    assert [(letter.error_kind, letter.source.offset) for letter in letters] == [
        ("duplicate_claim_id", 1), ("duplicate_claim_id", 2)]
    assert "was already read with the same claim" in letters[0].error
    # The model never saw the copies; C-2 sees one earlier claim of M1, not three.
    scored = [c.claim_id for claims, _ in h.client.calls for c in claims]
    assert scored == ["C-1", "C-2"]
    _claims, members = h.client.calls[-1]
    assert members is not None
    assert members[0].claims_1d == 2.0
    assert committed(h.cluster) == {("claims", 0): 4}
    assert h.counter("dead_lettered_total") == 2


def test_another_claim_under_a_used_claim_id_is_a_conflict_dead_letter() -> None:
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY,
                           lines=[{"procedure_code": "99215", "units": 1, "charge": 4800.0}])
    h.run()
    [letter] = dead_letters(h)
    assert letter.error_kind == "claim_id_conflict"
    assert "already used by another claim of this member" in letter.error
    assert h.cluster.decisions() == {"C-1": "claims.approved"}  # the first claim's


def test_claim_ids_survive_a_restore_from_the_changelog() -> None:
    h = Harness()
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    h.run()
    h.consumer.rebalance("revoke", [0])
    h.consumer.rebalance("assign", [0])
    h.cluster.append_claim(0, claim_id="C-1", member_id="M1", service_date=DAY)
    h.run()
    assert h.cluster.restores[-1] == [0]
    assert [letter.error_kind for letter in dead_letters(h)] == ["duplicate_claim_id"]
    assert list(h.cluster.decisions()) == ["C-1"]


# -- the state prefetch before the first assignment


def test_a_prefetch_reads_the_state_before_the_assignment_and_catches_up_after_it() -> None:
    previous = Harness()
    three_claims(previous.cluster)
    previous.run()  # the previous worker: M1 on partition 0, M2 on partition 1
    cluster = previous.cluster
    cluster.prefetch = True
    h = Harness(cluster=cluster)  # a replacement: subscribing starts the prefetch
    assert h.loop.prefetch is not None
    h.loop.prefetch.take()  # the prefetch has read the changelog as it was then
    # The previous owner commits one more batch before the group hands the partitions over.
    cluster.append_claim(0, claim_id="C-4", member_id="M1", service_date="2026-11-22")
    previous.run()
    restores_before = list(cluster.restores)

    cluster.append_claim(0, claim_id="C-5", member_id="M1", service_date="2026-11-23")
    h.run()
    assert h.cluster.decisions()["C-5"] == "claims.approved"
    assert cluster.restores == restores_before  # no full restore on the assignment
    assert [label for _, label in cluster.reads] == ["prefetched", "caught up"]
    assert cluster.reads[1][0] == {0: 1, 1: 1}  # from where the prefetch ended
    # C-5 saw C-1, C-2 (prefetched) and C-4 (written after the prefetch, caught up).
    claims, members = h.client.calls[-1]
    assert [c.claim_id for c in claims] == ["C-5"]
    assert members is not None
    assert members[0].claims_30d == 4.0
    # The same state as a full restore of the changelog now.
    full = cluster.restore(CHANGELOG, [0, 1])
    assert h.member_state() == {p: {m: decode_history(record) for m, record in members.items()}
                                for p, members in full.items()}


def test_a_failed_prefetch_falls_back_to_the_full_restore() -> None:
    cluster = FakeCluster(prefetch=True)
    three_claims(cluster)

    def broken(changelog: str, start: dict[int, int], keep: bool, label: str) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker gone (fake)"))

    cluster.read_changelog = broken  # type: ignore[method-assign,assignment]
    h = Harness(cluster=cluster)
    h.run()
    assert cluster.restores == [[0, 1]]
    assert set(h.cluster.decisions()) == {"C-1", "C-2", "C-3"}


def test_no_prefetch_with_static_membership_or_when_turned_off() -> None:
    for settings in (fast_settings(static_membership=True), fast_settings(state_prefetch=False)):
        cluster = FakeCluster(prefetch=True)
        three_claims(cluster)
        h = Harness(cluster=cluster, settings=settings)
        assert h.loop.prefetch is None
        h.run()
        assert cluster.reads == []
        assert cluster.restores == [[0, 1]]
