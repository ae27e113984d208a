"""Publishing prepared events: protobuf value, key, headers, wait for the ack.

A command's answer must not be contradicted later. A record librdkafka still holds
when the call gives up could be written after the client saw the failure, retried
elsewhere and moved on: a like timed out in one process and retried in another, then
an unlike, then the first like landing last. So every record's life in librdkafka
(message.timeout.ms) ends before its call's deadline, and the call waits for the
record's delivery report: OK once the broker acknowledged it, UNAVAILABLE once
librdkafka gave it up for good. message.timeout.ms is a producer-wide setting, so each
worker has one producer per *timeout class* (0.25 s, 0.5 s, 1 s, ... up to
MYSOCIAL_PRODUCE_TIMEOUT_S), created on first use, and a record goes to the longest
class that expires, expiry scan included, within its call's time. A call too short for
even the shortest class may end before its record is settled: that call fails
DEADLINE_EXCEEDED (unknown outcome), never UNAVAILABLE.

What no client can withdraw is a produce request a broker already received: a stalled
broker appends it when it resumes, before anything sent to it afterwards, and a leader
whose followers died before copying it commits it when they return. A retry with the
same request_id is counted once, so the client's retry makes the outcome known.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Gauge, Histogram

from command_service.commands import PreparedEvent
from mysocial.config import Settings
from mysocial.consistency import ConsistencyToken
from mysocial.errors import DeadlineExceeded, Unavailable
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.producer import (
    AsyncProducer,
    Delivered,
    DeliveryError,
    DeliveryUnknown,
    producer_config,
)
from mysocial.log import get_logger
from mysocial.metrics import LATENCY_BUCKETS
from mysocial.rpc import CallTrace
from mysocial.trace import CORRELATION_ID_HEADER, TRACEPARENT_HEADER

log = get_logger("command.publisher")

EVENT_TYPE_HEADER = "event-type"
PRODUCE_WINDOW_S = 0.003
# librdkafka looks for expired records once a second: a record's failure is reported
# between message.timeout.ms and about a second later (measured: up to +0.99 s).
EXPIRY_SCAN_S = 1.1
SHORTEST_CLASS_S = 0.25
RETRY_AFTER_S = 1.0

PRODUCE_SECONDS = Histogram(
    "mysocial_command_produce_seconds",
    "A command's event handed to the producer -> Kafka's answer, by topic and outcome "
    "(ok: acknowledged by all in-sync replicas; failed: not written; unknown: the "
    "call's time ended first).",
    ["topic", "outcome"],
    buckets=LATENCY_BUCKETS,
)
PRODUCER_QUEUE = Gauge(
    "mysocial_command_producer_queue",
    "Records this worker's producers hold (waiting for their window, queued or in "
    "flight in librdkafka).",
    multiprocess_mode="livesum",
)


def timeout_classes(longest_wait_s: float) -> list[float]:
    """The message timeouts producers are made with, shortest first: powers of two
    times SHORTEST_CLASS_S whose expiry still fits in the longest wait."""
    classes = [SHORTEST_CLASS_S]
    while classes[-1] * 2 + EXPIRY_SCAN_S <= longest_wait_s:
        classes.append(classes[-1] * 2)
    return classes


def class_for(classes: list[float], wait_s: float) -> float:
    """The longest class whose records are settled within wait_s (else the shortest)."""
    fitting = [c for c in classes if c + EXPIRY_SCAN_S <= wait_s]
    return fitting[-1] if fitting else classes[0]


class Publisher:
    """Appends events to their topics; an RPC returns only after the broker's ack."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.classes = timeout_classes(settings.produce_timeout_s)
        self._producers: dict[float, AsyncProducer] = {}
        self._latency: dict[tuple[str, str], Any] = {}  # bound histogram children
        self.in_flight = 0  # publish() calls waiting for Kafka (admission control)
        self.default = self._producer(self.classes[-1])  # also what the health probe asks

    def _producer(self, message_timeout_s: float) -> AsyncProducer:
        producer = self._producers.get(message_timeout_s)
        if producer is None:
            # Commands are ~100-byte events spread over many partitions: batches hold a
            # record or two, so lz4 only costs CPU here and in the broker (measured: +10 %
            # LikePost throughput without it). Concurrent commands share produce requests
            # through the producer's 3 ms window (see AsyncProducer._produce_outbox)
            # instead of linger.ms, which librdkafka times per partition (measured on
            # LikePost: linger 5 ms 2,400 req/s; window 3 ms and linger 0 2,600-2,800).
            config = producer_config(
                kafka_connection(self._settings),
                **{
                    "linger.ms": 0,
                    "compression.type": "none",
                    "message.timeout.ms": round(message_timeout_s * 1000),
                },
            )
            producer = AsyncProducer(config, window_s=PRODUCE_WINDOW_S)
            self._producers[message_timeout_s] = producer
        return producer

    async def publish(self, prepared: PreparedEvent, trace: CallTrace, timeout: float) -> Delivered:
        """Write the event and wait for acks=all within timeout: Unavailable if Kafka
        did not take it (and never will), DeadlineExceeded if the wait was too short to
        know. The call's trace context goes into the event and its headers."""
        event = prepared.event
        event.correlation_id = trace.correlation_id
        headers = [
            (EVENT_TYPE_HEADER, prepared.event_type.encode()),
            (CORRELATION_ID_HEADER, trace.correlation_id.encode()),
        ]
        if trace.traceparent:
            event.traceparent = trace.traceparent
            headers.append((TRACEPARENT_HEADER, trace.traceparent.encode()))
        producer = self._producer(class_for(self.classes, timeout))
        PRODUCER_QUEUE.set(sum(len(p) for p in self._producers.values()))
        began = time.perf_counter()
        self.in_flight += 1
        try:
            delivered = await producer.send(
                self._settings.topic(prepared.topic),
                prepared.key.encode(),
                event.SerializeToString(),
                headers,
                timeout=timeout,
            )
        except DeliveryUnknown as exc:
            self._observe(prepared.topic, "unknown", began)
            log.warning("publish_unsettled", topic=prepared.topic, error=str(exc))
            raise DeadlineExceeded(
                "Kafka did not acknowledge the command within the call's deadline, which "
                "was too short to know whether it will be written; retry it with the same "
                "request_id (retries are idempotent)",
                reason="EVENT_STORE_UNAVAILABLE",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        except DeliveryError as exc:
            self._observe(prepared.topic, "failed", began)
            log.warning("publish_failed", topic=prepared.topic, error=str(exc))
            raise Unavailable(
                "Kafka did not acknowledge the command in time and the producer gave it up; "
                "retry it with the same request_id (retries are idempotent, and a broker "
                "that had already received it may still write it: see docs/API.md)",
                reason="EVENT_STORE_UNAVAILABLE",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        finally:
            self.in_flight -= 1
            PRODUCER_QUEUE.set(sum(len(p) for p in self._producers.values()))
        self._observe(prepared.topic, "ok", began)
        log.debug(
            "event_published",
            event_type=prepared.event_type,
            partition=delivered.partition,
            offset=delivered.offset,
        )
        return delivered

    def _observe(self, topic: str, outcome: str, began: float) -> None:
        child = self._latency.get((topic, outcome))
        if child is None:
            child = self._latency[(topic, outcome)] = PRODUCE_SECONDS.labels(topic, outcome)
        child.observe(time.perf_counter() - began)

    def close(self, timeout: float) -> int:
        """Flush what is still queued; returns the number of records not delivered."""
        return sum(p.close(timeout) for p in list(self._producers.values()))


def consistency_token(delivered: Delivered, post_id: str) -> str:
    return ConsistencyToken(
        delivered.topic, delivered.partition, delivered.offset, post_id
    ).encode()
