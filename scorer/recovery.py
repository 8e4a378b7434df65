"""What the stream worker does when a Kafka call of its transaction fails (pure: no I/O).

librdkafka marks each error retriable, abortable or fatal, but a broker that goes away and
comes back needs more than those flags: messages that timed out in flight leave the
idempotent producer with a sequence gap that only a new producer epoch closes, and a
transaction the coordinator expired while it was away comes back as "fenced" although no
other worker exists. :func:`classify_txn_error` turns an error (and the age of the open
transaction) into one of four actions; the worker's shell carries them out.
"""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError


class TxnAction(Enum):
    RETRY = "retry"  # the same call again after a pause (the broker is away or busy)
    ABORT = "abort"  # abort the transaction, rewind to the committed offsets
    RECREATE = "recreate"  # a new producer with the same transactional.id, then rewind
    FATAL = "fatal"  # nothing this process can fix: stop with exit code 1


# The broker or its coordinator cannot be reached (yet): never a reason to give up.
UNREACHABLE_CODES = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE,
    KafkaError._WAIT_COORD,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.CONCURRENT_TRANSACTIONS,
    KafkaError.UNSTABLE_OFFSET_COMMIT,
})

FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)

# The producer's epoch or sequence numbers no longer match the broker's: "N message(s) failed
# delivery" (_INCONSISTENT) and timed-out messages leave a sequence gap that an abort in the
# same producer does not always close (the next transaction then blocks until
# max.poll.interval.ms, measured in drill 3); a new producer's init_transactions bumps the
# epoch and aborts whatever the old one left open.
EPOCH_BUMP_CODES = frozenset({
    KafkaError._INCONSISTENT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._STATE,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.INVALID_TXN_STATE,
})

# Configuration or permissions: a new producer would fail the same way.
CONFIGURATION_CODES = frozenset({
    KafkaError._NOT_CONFIGURED,
    KafkaError._INVALID_ARG,
    KafkaError._UNSUPPORTED_FEATURE,
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError.UNSUPPORTED_VERSION,
    KafkaError.INVALID_TRANSACTION_TIMEOUT,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
})


def classify_txn_error(
    error: KafkaError, *, txn_age_s: float | None, txn_timeout_s: float
) -> TxnAction:
    """The action for a failed transactional call (its step has already been retried).

    ``txn_age_s`` is how long the transaction in flight has been open (None: none is).
    Being fenced is fatal only while it is younger than the transaction timeout: then a
    newer worker with this transactional.id took over. An older one was expired by the
    coordinator (the broker was away longer than the timeout) and bumped its epoch; a new
    producer of our own takes over again.
    """
    code = error.code()
    # _FATAL ("Local: Fatal error", what produce() raises once the producer is in a fatal
    # state) hides its cause; the worker asks for it first, and when it stays unknown it is
    # judged like a fence: a newer worker must never be fenced back by this one.
    if code in FENCED_CODES or code == KafkaError._FATAL:
        expired = txn_age_s is not None and txn_age_s >= txn_timeout_s
        return TxnAction.RECREATE if expired else TxnAction.FATAL
    if code in CONFIGURATION_CODES:
        return TxnAction.FATAL
    if error.fatal() or code in EPOCH_BUMP_CODES:
        return TxnAction.RECREATE
    if error.txn_requires_abort():
        # The broker went away during the transaction: produce requests may have been lost
        # in flight, and an abort in the same producer leaves their sequence gap behind
        # (measured: the next transaction then fails with OUT_OF_ORDER_SEQUENCE_NUMBER).
        # Other abortable errors (a rebalance moved the group on) only need an abort.
        return TxnAction.RECREATE if code in UNREACHABLE_CODES else TxnAction.ABORT
    if error.retriable() or code in UNREACHABLE_CODES:
        return TxnAction.RETRY
    # Unknown: a fresh producer is always a safe way out (the worker bounds how often).
    return TxnAction.RECREATE


def is_unreachable(error: KafkaError) -> bool:
    """A consumer-side call failed only because the broker or coordinator is away or busy."""
    return not error.fatal() and (error.retriable() or error.code() in UNREACHABLE_CODES)
