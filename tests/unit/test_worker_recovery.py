"""How the stream worker recovers from a failed transactional call (pure classification)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from scorer.recovery import TxnAction, classify_txn_error, is_unreachable

TIMEOUT_S = 10.0


def classify(error: KafkaError, age_s: float | None = 0.05) -> TxnAction:
    return classify_txn_error(error, txn_age_s=age_s, txn_timeout_s=TIMEOUT_S)


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.CONCURRENT_TRANSACTIONS,
    ],
)
def test_a_broker_that_is_away_or_busy_is_waited_for(code: int) -> None:
    # librdkafka does not always set the retriable flag on these (measured: a timed-out
    # send_offsets_to_transaction does, a consumer's committed() does not).
    assert classify(KafkaError(code, "away")) is TxnAction.RETRY
    assert classify(KafkaError(code, "away", retriable=True)) is TxnAction.RETRY
    assert is_unreachable(KafkaError(code, "away"))


@pytest.mark.parametrize(
    "code",
    [KafkaError.TRANSACTION_ABORTABLE, KafkaError.ILLEGAL_GENERATION,
     KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS],
)
def test_an_abortable_error_of_a_reachable_broker_aborts(code: int) -> None:
    assert classify(KafkaError(code, "abortable", txn_requires_abort=True)) is TxnAction.ABORT


@pytest.mark.parametrize(
    "code", [KafkaError.NOT_COORDINATOR, KafkaError._TRANSPORT, KafkaError.REQUEST_TIMED_OUT]
)
def test_an_abortable_error_because_the_broker_went_away_replaces_the_producer(code: int
                                                                               ) -> None:
    # Measured in drill 3: send_offsets_to_transaction failed with an abortable
    # NOT_COORDINATOR as the broker came back; after the abort, the next transaction failed
    # with OUT_OF_ORDER_SEQUENCE_NUMBER (produce requests lost in flight).
    error = KafkaError(code, "broker went away", txn_requires_abort=True)
    assert classify(error) is TxnAction.RECREATE


def test_messages_that_failed_delivery_replace_the_producer_instead_of_aborting() -> None:
    # What a broker stop mid-batch produces: the abort alone leaves a sequence gap behind.
    error = KafkaError(KafkaError._INCONSISTENT, "40 message(s) failed delivery",
                       txn_requires_abort=True)
    assert classify(error) is TxnAction.RECREATE


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._STATE,
        KafkaError.INVALID_TXN_STATE,
    ],
)
def test_errors_that_need_a_new_epoch_replace_the_producer(code: int) -> None:
    assert classify(KafkaError(code, "epoch")) is TxnAction.RECREATE
    assert classify(KafkaError(code, "epoch", txn_requires_abort=True)) is TxnAction.RECREATE


def test_other_fatal_errors_replace_the_producer() -> None:
    error = KafkaError(KafkaError.UNKNOWN, "fatal idempotent producer error", fatal=True)
    assert classify(error) is TxnAction.RECREATE


def test_a_fatal_error_of_unknown_cause_is_judged_like_a_fence() -> None:
    # Measured (integration test, loaded machine): produce() of a zombie raised _FATAL
    # "Local: Fatal error" while librdkafka's cause was _FENCED; replacing the producer
    # would have fenced the newer worker back.
    error = KafkaError(KafkaError._FATAL, "Unable to produce message: Local: Fatal error")
    assert classify(error, age_s=0.3) is TxnAction.FATAL
    assert classify(error, age_s=None) is TxnAction.FATAL
    assert classify(error, age_s=TIMEOUT_S + 1) is TxnAction.RECREATE


@pytest.mark.parametrize(
    "code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH]
)
def test_fenced_while_the_transaction_is_young_means_a_newer_worker_took_over(code: int) -> None:
    assert classify(KafkaError(code, "fenced", fatal=True), age_s=0.2) is TxnAction.FATAL
    assert classify(KafkaError(code, "fenced", fatal=True), age_s=None) is TxnAction.FATAL


@pytest.mark.parametrize(
    "code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH]
)
def test_fenced_after_the_transaction_timeout_means_the_coordinator_expired_it(code: int) -> None:
    # The broker was away longer than transaction.timeout.ms: on its return the coordinator
    # aborts the open transaction and bumps the epoch; no other worker exists.
    for age_s in (TIMEOUT_S, TIMEOUT_S + 25.0):
        assert classify(KafkaError(code, "fenced", fatal=True), age_s=age_s) is TxnAction.RECREATE


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.INVALID_TRANSACTION_TIMEOUT,
        KafkaError._NOT_CONFIGURED,
    ],
)
def test_configuration_and_permission_errors_are_fatal(code: int) -> None:
    assert classify(KafkaError(code, "config", fatal=True)) is TxnAction.FATAL
    assert classify(KafkaError(code, "config")) is TxnAction.FATAL
    assert not is_unreachable(KafkaError(code, "config"))


def test_an_unknown_error_replaces_the_producer_rather_than_stopping() -> None:
    assert classify(KafkaError(KafkaError.UNKNOWN, "who knows")) is TxnAction.RECREATE


def test_a_fatal_error_is_never_waited_for_as_unreachable() -> None:
    assert not is_unreachable(KafkaError(KafkaError._TIMED_OUT, "x", fatal=True))
    assert is_unreachable(KafkaError(KafkaError.UNKNOWN, "x", retriable=True))
