"""An asyncio face for confluent-kafka's idempotent producer.

`send()` resolves when the broker acknowledged the record (acks=all) without blocking
the event loop, so a gRPC handler can await its own event's delivery while thousands
of others are in flight. Records wait in an outbox for a short window and go to
librdkafka together, so they share produce requests. The loop itself serves
librdkafka's delivery reports: while records are in flight a 1 ms timer calls
poll(0) and resolves what arrived, in one batch. A delivery thread would cost a GIL
hand-off, a lock and a self-pipe wake-up per batch on top (measured: ~8 % of a
command worker's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from mysocial.kafka.connection import KafkaConnection
from mysocial.log import get_logger

log = get_logger("kafka.producer")

Headers = Sequence[tuple[str, bytes]]
_Fut = asyncio.Future["Delivered"]
_Headers = list[tuple[str, str | bytes | None]]  # as Producer.produce takes them


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int


class DeliveryError(Exception):
    """The record was not acknowledged (broker unreachable, timed out, fatal error)."""


class DeliveryUnknown(DeliveryError):
    """The wait ended before librdkafka settled the record: it may still be written,
    until its message.timeout.ms (plus librdkafka's expiry scan) has passed."""


def producer_config(connection: KafkaConnection, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer configuration shared by every writer.

    murmur2_random is the Java client's partitioner: keys land on the same partition
    whoever writes them (this producer, Kafka Streams, the console tools).
    """
    config: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "socket.keepalive.enable": True,
    }
    config.update(overrides)
    return connection.config(config)


class AsyncProducer:
    """Produce from asyncio code and await the broker's acknowledgement."""

    POLL_INTERVAL_S = 0.001  # while records are in flight
    IDLE_POLL_S = 0.5  # otherwise: serves error callbacks

    def __init__(
        self,
        config: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None = None,
        window_s: float = 0.0,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._config = dict(config)
        self._config["error_cb"] = self._on_error
        self._producer = Producer(self._config)
        self._pending: list[tuple[_Fut, KafkaError | None, Any]] = []
        self._lock = threading.Lock()  # close() flushes from another thread
        self._fatal: KafkaError | None = None
        self._closed = False
        self._tick: asyncio.TimerHandle | None = None
        self._fast = False
        self._schedule(self.IDLE_POLL_S)
        self.window_s = window_s
        self._window: asyncio.TimerHandle | None = None
        self._outbox: list[tuple[str, bytes, bytes, _Headers, _Fut, list[bool]]] = []

    def __len__(self) -> int:
        """Records held: waiting for the window, queued or in flight in librdkafka."""
        return len(self._outbox) + len(self._producer)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("producer_fatal_error", error=str(err))
        else:
            log.warning("producer_error", error=str(err))

    def _schedule(self, delay: float) -> None:
        if not self._closed:
            self._tick = self._loop.call_later(delay, self._poll)

    def _poll(self) -> None:
        """Loop timer: serve delivery reports, resolve their futures in one pass."""
        try:
            self._producer.poll(0)
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                _resolve_all(batch)
        finally:
            # len(): records queued or in flight, whose reports are still to come.
            self._fast = len(self._producer) > 0
            self._schedule(self.POLL_INTERVAL_S if self._fast else self.IDLE_POLL_S)

    def _hand_over(self) -> None:
        """From another thread (close): pass reports served there to the loop."""
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            # RuntimeError: loop closed during shutdown, nobody awaits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve_all, batch)

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Headers = (), timeout: float = 10.0
    ) -> Delivered:
        """Produce one record and wait until it is acknowledged or timeout passes.

        DeliveryError: librdkafka reported the record failed (it never sends it again;
        bytes a stalled broker had already received may still be appended when it
        resumes), or it was never handed to librdkafka. DeliveryUnknown: the timeout
        came first and the record is still in librdkafka, which may write it until its
        message.timeout.ms has passed; a timeout longer than that (plus the expiry scan)
        never ends this way.
        """
        if self._fatal is not None:
            self._recreate()
        fut: _Fut = self._loop.create_future()
        hdrs: _Headers = list(headers)
        handed = [False]  # set once librdkafka holds the record
        self._outbox.append((topic, value, key, hdrs, fut, handed))
        if self._window is None:
            self._window = self._loop.call_later(self.window_s, self._produce_outbox)
        # A timer instead of wait_for(): no extra task per request on the hot path.
        expiry = self._loop.call_at(self._loop.time() + timeout, _expire, fut, timeout, handed)
        try:
            return await fut
        finally:
            expiry.cancel()

    def _produce_outbox(self) -> None:
        """Hand the window's records to librdkafka together.

        librdkafka times linger.ms per partition, so records spread over many
        partitions left one by one go out about one per produce request (measured:
        1.4 records per request at 1,200 records/s over 48 partitions). Produced in one
        burst, their batches are ready together and share one request: the broker's
        cost per command drops with it.
        """
        self._window = None
        outbox, self._outbox = self._outbox, []
        for i, (topic, value, key, headers, fut, handed) in enumerate(outbox):
            if fut.done():  # timed out or cancelled before it was written: stays unwritten
                continue
            try:
                self._producer.produce(
                    topic, value, key, headers=headers, on_delivery=partial(self._delivered, fut)
                )
                handed[0] = True
            except BufferError:
                # Local queue full: back-pressure; the rest waits for the next window
                # (each record's own deadline still applies).
                self._outbox[:0] = outbox[i:]
                self._window = self._loop.call_later(0.005, self._produce_outbox)
                break
            except KafkaException as exc:
                fut.set_exception(DeliveryError(str(exc)))
        if not self._fast:  # switch the idle poll timer to the in-flight one
            self._fast = True
            if self._tick is not None:
                self._tick.cancel()
            self._schedule(self.POLL_INTERVAL_S)

    def _delivered(self, fut: _Fut, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            self._pending.append((fut, err, msg))

    def _recreate(self) -> None:
        """Replace a producer that hit a fatal error (idempotence state lost)."""
        old, self._fatal = self._producer, None
        self._producer = Producer(self._config)
        log.warning("producer_recreated")
        threading.Thread(target=old.flush, args=(1.0,), daemon=True).start()

    def metadata(self, topic: str, timeout: float) -> None:
        """Ask the cluster for topic's metadata through this producer's connections
        (blocking: call from a thread); raises KafkaException if it does not answer."""
        self._producer.list_topics(topic, timeout=timeout)

    def flush(self, timeout: float) -> int:
        """Wait for queued records; returns how many are still undelivered."""
        remaining = int(self._producer.flush(timeout))
        self._hand_over()
        return remaining

    def close(self, timeout: float = 10.0) -> int:
        """Flush (callable from a worker thread); returns the count of undelivered records."""
        remaining = self.flush(timeout)
        self._closed = True
        return remaining


def _expire(fut: _Fut, timeout: float, handed: list[bool]) -> None:
    if not fut.done():
        error = DeliveryUnknown if handed[0] else DeliveryError
        fut.set_exception(error(f"no acknowledgement from Kafka within {timeout:.1f}s"))


def _resolve_all(batch: list[tuple[_Fut, KafkaError | None, Any]]) -> None:
    for fut, err, msg in batch:
        if fut.done():
            continue
        if err is not None:
            fut.set_exception(DeliveryError(str(err)))
        else:
            fut.set_result(Delivered(msg.topic(), msg.partition(), msg.offset()))
