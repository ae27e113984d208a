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

from confluent_kafka import Consumer, KafkaError, Producer

from mysocial.config import Settings
from mysocial.kafka import consume_batch, topics
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
    producer = Producer(producer_config(settings.bootstrap, **{"linger.ms": 5}))
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
    bootstrap: str, group: str, topic_names: list[str], total: int, out: Any, first_at: Any
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
        }
    )
    consumer.subscribe(topic_names)
    count = 0
    first: float | None = None
    event = ev.Event()
    idle_since = None
    while True:
        msgs = consume_batch(consumer, 10000, 0.5)
        if not msgs:
            with out.get_lock():
                if out.value >= total:
                    break
            idle_since = idle_since or time.perf_counter()
            if time.perf_counter() - idle_since > 30:
                break
            continue
        idle_since = None
        if first is None:
            first = time.time()
            with first_at.get_lock():
                if first_at.value == 0 or first < first_at.value:
                    first_at.value = first
        n = 0
        for msg in msgs:
            if msg.error() is None:
                event.ParseFromString(msg.value())
                n += 1
        count += n
        with out.get_lock():
            out.value += n
    consumer.close()


def b3_consume(settings: Settings, processes: int, timeout: float = 600.0) -> dict[str, Any]:
    """Drain likes + comments with N consumer processes that parse every event."""
    names = [settings.topic(topics.LIKES), settings.topic(topics.COMMENTS)]
    from mysocial.kafka import admin_client

    admin = admin_client(settings.bootstrap)
    total = sum(sum(end_offsets(admin, t, settings.likes_partitions).values()) for t in names)
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    first_at = ctx.Value("d", 0.0)
    group = f"bench-b3-{uuid.uuid4().hex}"
    started = time.perf_counter()
    procs = [
        ctx.Process(
            target=_drain, args=(settings.bootstrap, group, names, total, counter, first_at)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    deadline = started + timeout
    while counter.value < total and time.perf_counter() < deadline:
        time.sleep(0.05)
    finished = time.time()
    seconds = time.perf_counter() - started
    for p in procs:
        p.join(60)
    steady = finished - first_at.value if first_at.value else seconds
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
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"bench-b4-{uuid.uuid4().hex}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 5,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    time.sleep(0.5)
    producer = Producer(producer_config(settings.bootstrap, **{"linger.ms": 0}))
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
