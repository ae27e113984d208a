"""AsyncProducer against the real broker: the produce window and loop-served reports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.producer import AsyncProducer, Delivered, producer_config
from tests.support.helpers import LoopThread, read_topic


def _config(settings: Settings, stats: list[dict[str, Any]]) -> dict[str, Any]:
    return producer_config(
        kafka_connection(settings),
        **{
            "linger.ms": 0,
            "compression.type": "none",
            "statistics.interval.ms": 100,
            "stats_cb": lambda raw: stats.append(json.loads(raw)),
        },
    )


def _produce_requests(stats: list[dict[str, Any]]) -> int:
    """Produce requests sent so far (librdkafka's per-broker request counters)."""
    last = stats[-1]["brokers"]
    return sum(b["req"].get("Produce", 0) for b in last.values() if b["nodeid"] >= 0)


def test_a_window_of_sends_shares_produce_requests_and_each_gets_its_offset(
    settings: Settings, loop_thread: LoopThread
) -> None:
    topic = settings.topic(topics.LIKES)  # 6 partitions in tests
    stats: list[dict[str, Any]] = []
    keys = [f"post-{i}".encode() for i in range(300)]

    async def produce_requests_now() -> int:
        """Produce requests counted in the next statistics report (served by poll)."""
        stats.clear()
        for _ in range(200):  # reports every 100 ms, handed over by the idle poll timer
            if len(stats) >= 2:  # the first may have been generated before the call
                return _produce_requests(stats)
            await asyncio.sleep(0.05)
        raise AssertionError("no librdkafka statistics within 10 s")

    async def scenario() -> tuple[list[Delivered], int]:
        producer = AsyncProducer(_config(settings, stats), window_s=0.02)
        await producer.send(topic, b"warm-up", b"w", timeout=30)  # connection, producer id
        before = await produce_requests_now()
        sent = await asyncio.gather(*(producer.send(topic, k, k, timeout=30) for k in keys))
        after = await produce_requests_now()
        await asyncio.to_thread(producer.close, 5)
        return sent, after - before

    delivered, requests = loop_thread.run(scenario())
    assert len({(d.partition, d.offset) for d in delivered}) == len(keys)
    # 300 records over 6 partitions handed over in one burst: a handful of requests,
    # not one per record (librdkafka times linger per partition).
    assert 0 < requests <= 30, requests
    stored = {(r.partition, r.offset): r.key for r in read_topic(settings, topic)}
    for key, d in zip(keys, delivered, strict=True):
        assert stored[(d.partition, d.offset)] == key


def test_a_send_cancelled_inside_its_window_is_never_written(
    settings: Settings, loop_thread: LoopThread
) -> None:
    topic = settings.topic(topics.COMMENTS)

    async def scenario() -> Delivered:
        producer = AsyncProducer(_config(settings, []), window_s=0.05)
        doomed = asyncio.ensure_future(producer.send(topic, b"k", b"cancelled", timeout=30))
        await asyncio.sleep(0)  # queued in the outbox, window still open
        doomed.cancel()
        kept = await producer.send(topic, b"k", b"kept", timeout=30)
        await asyncio.to_thread(producer.close, 5)
        return kept

    kept = loop_thread.run(scenario())
    values = [r.value for r in read_topic(settings, topic)]
    assert values == [b"kept"]
    assert kept.offset >= 0
