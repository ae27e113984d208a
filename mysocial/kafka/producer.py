"""An asyncio face for confluent-kafka's idempotent producer.

`send()` resolves when the broker acknowledged the record (acks=all) without blocking
the event loop: a background thread serves librdkafka's delivery reports and hands
them to the loop in batches (one wake-up per poll, not one per record), so a gRPC
handler can await its own event's delivery while thousands of others are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from mysocial.kafka import client_logger
from mysocial.log import get_logger

log = get_logger("kafka.producer")

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int


class DeliveryError(Exception):
    """The record was not acknowledged (broker unreachable, timed out, fatal error)."""


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer configuration shared by every writer.

    murmur2_random is the Java client's partitioner: keys land on the same partition
    whoever writes them (this producer, Kafka Streams, the console tools).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "socket.keepalive.enable": True,
        "logger": client_logger(),
    }
    config.update(overrides)
    return config


class AsyncProducer:
    """Produce from asyncio code and await the broker's acknowledgement."""

    def __init__(
        self, config: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._config = dict(config)
        self._config["error_cb"] = self._on_error
        self._producer = Producer(self._config)
        self._pending: list[tuple[asyncio.Future[Delivered], KafkaError | None, Any]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._fatal: KafkaError | None = None
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("producer_fatal_error", error=str(err))
        else:
            log.warning("producer_error", error=str(err))

    def _poll_loop(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
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

        On DeliveryError the record may still be written later (it stays queued in
        librdkafka until message.timeout.ms): callers make commands idempotent.
        """
        if self._fatal is not None:
            self._recreate()
        fut: asyncio.Future[Delivered] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            with self._lock:
                self._pending.append((fut, err, msg))

        deadline = self._loop.time() + timeout
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=list(headers), on_delivery=on_delivery
                )
                break
            except BufferError:
                # Local queue full: back-pressure until librdkafka drains or we time out.
                if self._loop.time() >= deadline:
                    raise DeliveryError("producer queue full") from None
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                raise DeliveryError(str(exc)) from exc
        # A timer instead of wait_for(): no extra task per request on the hot path.
        expiry = self._loop.call_at(deadline, _expire, fut, timeout)
        try:
            return await fut
        finally:
            expiry.cancel()

    def _recreate(self) -> None:
        """Replace a producer that hit a fatal error (idempotence state lost)."""
        old, self._fatal = self._producer, None
        self._producer = Producer(self._config)
        log.warning("producer_recreated")
        threading.Thread(target=old.flush, args=(1.0,), daemon=True).start()

    def flush(self, timeout: float) -> int:
        """Wait for queued records; returns how many are still undelivered."""
        remaining = int(self._producer.flush(timeout))
        self._hand_over()
        return remaining

    def close(self, timeout: float = 10.0) -> int:
        """Flush, stop the delivery thread; returns the count of undelivered records."""
        remaining = self.flush(timeout)
        self._closing.set()
        self._thread.join(timeout=2.0)
        self._hand_over()
        return remaining


def _expire(fut: asyncio.Future[Delivered], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(DeliveryError(f"no acknowledgement from Kafka within {timeout:.1f}s"))


def _resolve_all(batch: list[tuple[asyncio.Future[Delivered], KafkaError | None, Any]]) -> None:
    for fut, err, msg in batch:
        if fut.done():
            continue
        if err is not None:
            fut.set_exception(DeliveryError(str(err)))
        else:
            fut.set_result(Delivered(msg.topic(), msg.partition(), msg.offset()))
