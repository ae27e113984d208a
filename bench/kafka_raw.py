"""Raw Kafka baselines measured with confluent-kafka alone (what the pieces allow).

B2: produce pre-serialized events of the real size, idempotent, acks=all → msg/s.
B3: batched consume + protobuf parse draining the backlog, in N processes of one
    consumer group (same process count as the processor it is compared with) → events/s.
B4: produce → consume latency at a fixed rate → p50/p99.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from mysocial.config import Settings
from mysocial.kafka import consume_batch, topics
from mysocial.kafka.connection import KafkaConnection, kafka_connection
from mysocial.kafka.producer import producer_config
from mysocial.kafka.reader import end_offsets
from mysocial.v1 import events_pb2 as ev


def sample_event() -> bytes:
    """A LikePost event as the command service writes it."""
    e = ev.Event(event_id=uuid.uuid4().hex, actor_user_id="user123456")
    e.occurred_at.FromMilliseconds(int(time.time() * 1000))
    e.post_liked.post_id = str(uuid.uuid4())
    return e.SerializeToString()


def b2_produce(settings: Settings, messages: int) -> dict[str, Any]:
    """Idempotent acks=all producer throughput with pre-serialized values."""
    topic = settings.topic(topics.LIKES)
    value = sample_event()
    keys = [str(uuid.uuid4()).encode() for _ in range(1000)]
    producer = Producer(producer_config(kafka_connection(settings), **{"linger.ms": 5}))
    delivered = [0]

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            delivered[0] += 1

    started = time.perf_counter()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, value, keys[i % 1000], on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    seconds = time.perf_counter() - started
    return {
        "messages": delivered[0],
        "seconds": seconds,
        "msg_per_s": delivered[0] / seconds,
        "value_bytes": len(value),
    }


def _drain(
    connection: KafkaConnection,
    assignment: list[tuple[str, int, int]],
    out: Any,
    first_at: Any,
    last_at: Any,
) -> None:
    """Consume and parse this process's partitions up to their end offsets.

    The partitions are assigned, not subscribed: a consumer group's rebalance while the
    second process joins would hand partitions over without committed offsets, and
    their records would be read (and counted) twice.
    """
    consumer = Consumer(
        connection.config(
            {
                "group.id": f"bench-b3-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p, _ in assignment])
    remaining = sum(end for _, _, end in assignment)
    count = 0
    first: float | None = None
    event = ev.Event()
    deadline = time.monotonic() + 600
    while count < remaining and time.monotonic() < deadline:
        msgs = consume_batch(consumer, 10000, 0.5)
        if not msgs:
            continue
        if first is None:
            first = time.time()
        for msg in msgs:
            if msg.error() is None:
                event.ParseFromString(msg.value())
                count += 1
    finished = time.time()
    consumer.close()
    with out.get_lock():
        out.value += count
    if first is not None:
        with first_at.get_lock():
            if first_at.value == 0 or first < first_at.value:
                first_at.value = first
    with last_at.get_lock():
        last_at.value = max(last_at.value, finished)


def b3_consume(settings: Settings, processes: int, timeout: float = 600.0) -> dict[str, Any]:
    """Drain likes + comments with N consumer processes that parse every event.

    Each process reads a contiguous range of partitions of both topics, as the range
    assignor gives the processor's instances; every event is read exactly once.
    """
    names = [settings.topic(topics.LIKES), settings.topic(topics.COMMENTS)]
    admin = kafka_connection(settings).admin()
    ends: dict[tuple[str, int], int] = {}
    for name in names:
        ends.update(end_offsets(admin, name, settings.copartitions))
    total = sum(ends.values())
    parts = settings.copartitions
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    first_at = ctx.Value("d", 0.0)
    last_at = ctx.Value("d", 0.0)
    started = time.perf_counter()
    procs = []
    for i in range(processes):
        mine = range(i * parts // processes, (i + 1) * parts // processes)
        assignment = [(t, p, ends[(t, p)]) for t in names for p in mine if ends[(t, p)] > 0]
        procs.append(
            ctx.Process(
                target=_drain,
                args=(kafka_connection(settings), assignment, counter, first_at, last_at),
            )
        )
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    seconds = time.perf_counter() - started
    steady = last_at.value - first_at.value if first_at.value else seconds
    if counter.value != total:
        raise RuntimeError(f"B3 read {counter.value} events of {total}")
    return {
        "events": counter.value,
        "expected": total,
        "seconds": seconds,
        "events_per_s": counter.value / seconds,
        "events_per_s_excl_startup": counter.value / max(steady, 1e-9),
        "processes": processes,
    }


def b4_latency(settings: Settings, rate: float, seconds: float) -> dict[str, Any]:
    """Produce at `rate` msg/s and measure produce → consume latency."""
    topic = settings.topic(topics.COMMENTS)
    consumer = Consumer(
        kafka_connection(settings).config(
            {
                "group.id": f"bench-b4-{uuid.uuid4().hex}",
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 5,
                "isolation.level": "read_committed",
            }
        )
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    time.sleep(0.5)
    producer = Producer(producer_config(kafka_connection(settings), **{"linger.ms": 0}))
    latencies: list[float] = []
    sent: dict[bytes, float] = {}
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        due = start + n * interval
        now = time.perf_counter()
        if now < due:
            for msg in consume_batch(consumer, 1000, min(due - now, 0.01)):
                key = msg.key()
                if msg.error() is None and key in sent:
                    latencies.append((time.perf_counter() - sent.pop(key)) * 1000)
            continue
        key = f"{n}".encode()
        sent[key] = time.perf_counter()
        producer.produce(topic, b"x" * 80, key)
        producer.poll(0)
        n += 1
    drain_until = time.perf_counter() + 5
    while sent and time.perf_counter() < drain_until:
        for msg in consume_batch(consumer, 1000, 0.05):
            key = msg.key()
            if msg.error() is None and key in sent:
                latencies.append((time.perf_counter() - sent.pop(key)) * 1000)
    # The first second measures start-up (metadata, connections to each partition
    # leader, the consumer's first fetches), not the steady latency compared with T4.
    latencies = latencies[int(rate) :]
    consumer.close()
    latencies.sort()
    return {
        "rate": rate,
        "samples": len(latencies),
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] if latencies else None,
    }
