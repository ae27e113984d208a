"""The transaction: what makes every output, state change and consumed offset count
exactly once.

Everything a commit interval produces goes into one Kafka transaction, together with
the offsets of the records it consumed. The commit is two-phase, as in Kafka
Streams (prepareCommit / postCommit): local state reaches RocksDB only after Kafka
committed, so the local copy is never ahead of the changelog.

Errors of the transactional API fall into three classes (`classify`):
- retriable: try the same call again (a broker moved, a request timed out);
- abortable: abort the transaction, forget what it changed and rewind the input to
  the committed offsets: the same records are processed again;
- fatal: fenced by a newer instance with our transactional id, or the producer is
  unusable; the process stops and a supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from mysocial.log import get_logger
from processor.errors import FatalProcessorError, is_fatal
from processor.metrics import TransactionClock
from processor.projection import Context, Projection
from processor.watchdog import Watchdog

log = get_logger("processor.checkpoint")

ATTEMPT_S = 5.0  # the longest one transactional call may block


class Abortable(Exception):
    """The transaction must be aborted (and the input rewound)."""


class ErrorClass(Enum):
    RETRIABLE = "retriable"
    ABORTABLE = "abortable"
    FATAL = "fatal"


def classify(err: KafkaError) -> ErrorClass:
    """How to react to an error of the transactional producer (pure)."""
    if is_fatal(err) or err.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    ):
        return ErrorClass.FATAL
    if err.txn_requires_abort():
        return ErrorClass.ABORTABLE
    if err.retriable():
        return ErrorClass.RETRIABLE
    return ErrorClass.FATAL


def call(
    what: str, fn: Callable[[float], Any], deadline: float, watchdog: Watchdog | None = None
) -> Any:
    """Call a transactional API, fn(timeout of one attempt), retrying retriable errors
    until `deadline` (time.monotonic()); raise the others as Abortable or
    FatalProcessorError. No attempt outlasts ATTEMPT_S, so a stalled broker cannot hold
    the loop (or a SIGTERM) longer than that, and nothing is retried past the point
    where the broker aborts the transaction anyway; an attempt the library does not end
    in time is the watchdog's."""
    attempt = 0
    while True:
        attempt += 1
        timeout = max(0.1, min(ATTEMPT_S, deadline - time.monotonic()))
        try:
            with watchdog.bounded(what, timeout) if watchdog else contextlib.nullcontext():
                return fn(timeout)
        except (KafkaException, SystemError) as raised:
            # A KafkaException raised while librdkafka ran a delivery callback reaches
            # us as a SystemError whose cause it is.
            exc = raised if isinstance(raised, KafkaException) else raised.__cause__
            if not isinstance(exc, KafkaException):
                raise
            err: KafkaError = exc.args[0]
            kind = classify(err)
            if kind == ErrorClass.ABORTABLE:
                raise Abortable(f"{what}: {err}") from exc
            if kind == ErrorClass.RETRIABLE and time.monotonic() < deadline:
                log.warning("transaction_call_retry", call=what, error=str(err))
                time.sleep(min(1.0, 0.1 * attempt))
                continue
            why = " (retried until its deadline)" if kind == ErrorClass.RETRIABLE else ""
            raise FatalProcessorError(f"{what}: {err}{why}") from exc


def flush(producer: Producer, timeout: float) -> None:
    """Every record produced so far acknowledged, or a retriable timeout."""
    left = producer.flush(timeout)
    if left:
        reason = f"{left} records not acknowledged within {timeout:.1f}s"
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, reason, retriable=True))


def _soon() -> float:
    return time.monotonic() + ATTEMPT_S


class Transaction:
    """The open transaction of one instance (at most one at a time)."""

    def __init__(
        self,
        ctx: Context,
        consumer: Consumer,
        projections: Sequence[Projection],
        watchdog: Watchdog | None = None,
        producers: Sequence[Producer] = (),
    ) -> None:
        self.ctx = ctx
        self.watchdog = watchdog
        # Used in turn, one transaction each (processor/clients.py, PRODUCERS): the
        # markers of a commit are still being written when the next transaction starts.
        self.producers = list(producers) or [ctx.producer]
        self.turn = self.producers.index(ctx.producer) if ctx.producer in self.producers else 0
        self.consumer = consumer
        self.projections = projections
        self.open = False
        self.started = 0.0
        # The broker aborts a transaction open longer than this: no use retrying past.
        self.timeout_s = ctx.settings.processor_transaction_timeout_ms / 1000.0
        self.commits = 0
        self.aborts = 0
        self.clock = TransactionClock()  # its metrics (processor/metrics.py)

    @property
    def producer(self) -> Producer:
        """The producer of the open (or next) transaction."""
        return self.ctx.producer

    def _ended(self) -> None:
        """The transaction is over: the next one goes through the next producer."""
        self.open = False
        self.ctx.positions.clear()
        if len(self.producers) > 1:
            self.turn = (self.turn + 1) % len(self.producers)
            self.ctx.use(self.producers[self.turn])

    def _call(self, what: str, fn: Callable[[float], Any], deadline: float) -> Any:
        return call(what, fn, deadline, self.watchdog)

    def init_producers(self) -> None:
        """Register every transactional id: fences a predecessor's producers and ends
        the transactions it left open."""
        for producer in self.producers:
            init = producer.init_transactions
            call("init_transactions", init, time.monotonic() + 60, self.watchdog)

    def poll(self) -> None:
        """Serve every producer's callbacks (the idle one's errors and statistics too)."""
        for producer in self.producers:
            producer.poll(0)

    def close(self) -> None:
        """Flush what is left (nothing, after the last commit) before the process ends."""
        for producer in self.producers:
            try:  # a fenced or fatal producer refuses to flush; its callbacks may fail too
                producer.flush(5)
            except Exception as exc:
                log.warning("producer_flush_on_close_failed", error=repr(exc))

    def begin(self) -> None:
        if not self.open:
            self._call("begin_transaction", lambda t: self.producer.begin_transaction(), _soon())
            self.open = True
            self.started = time.monotonic()

    def commit(self) -> None:
        """Commit what this transaction consumed and produced, in five steps."""
        if not self.open:
            return
        now = self.ctx.clock()
        # 1. Prepare: each projection produces its outputs and changelog records.
        for projection in self.projections:
            projection.prepare_commit(now)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.ctx.positions.items()]
        began = time.monotonic()
        try:
            deadline = max(self.started + self.timeout_s, time.monotonic() + ATTEMPT_S)
            # 2. The consumed offsets join the transaction. First: its two round trips
            # (AddOffsetsToTxn, TxnOffsetCommit) overlap the outputs' acknowledgements,
            # which librdkafka awaits meanwhile (measured: commit p50 -1 ms of 11-24,
            # bench/NOTES.md). A record that then fails aborts the offsets with it.
            if offsets:
                group = self.consumer.consumer_group_metadata()
                self._call(
                    "send_offsets_to_transaction",
                    lambda t: self.producer.send_offsets_to_transaction(offsets, group, t),
                    deadline,
                )
            # 3. Every record of the transaction is acknowledged by the broker (an
            # explicit flush: commit_transaction's own was measured far slower).
            self._call("flush", lambda t: flush(self.producer, t), deadline)
            # 4. Commit: outputs, changelog and offsets become visible together.
            self._call(
                "commit_transaction", lambda t: self.producer.commit_transaction(t), deadline
            )
        except Abortable as exc:
            self.abort_and_rewind(str(exc))
            return
        self._ended()
        self.commits += 1
        self.clock.committed(began)
        # 5. Post-commit: the committed state goes to the local stores.
        for projection in self.projections:
            projection.post_commit()

    def abort_and_rewind(self, reason: str) -> None:
        """Abort the open transaction and continue from the last committed state."""
        log.warning("transaction_aborted", reason=reason)
        self.aborts += 1
        try:
            self._call(
                "abort_transaction",
                lambda t: self.producer.abort_transaction(t),
                time.monotonic() + self.timeout_s,
            )
        except Abortable as exc:
            raise FatalProcessorError(f"abort failed: {exc}") from exc
        self._ended()
        self.clock.reset()
        for projection in self.projections:
            projection.abort()
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=30):
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                self.ctx.consumed[(tp.topic, tp.partition)] = max(tp.offset, 0)
