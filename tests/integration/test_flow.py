"""The processor's flow control (processor/flow.py) against the real broker: likes and
comments are held while the posts backlog is unknown, and a posts partition whose end
no fetch has reported does not hold them for ever."""

from __future__ import annotations

import time
from typing import cast

from confluent_kafka import Consumer, Producer, TopicPartition

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from processor.flow import FlowControl
from processor.output import Output
from processor.projection import Context
from tests.support.helpers import wait_until


def test_a_posts_partition_no_fetch_reported_is_asked_of_the_broker(settings: Settings) -> None:
    """A smoke run of the benchmark saw a posts partition report no end for six
    minutes, and every like and comment waited all that time. Here no fetch can report
    one (the posts partitions are paused from the start): the ends are asked of the
    broker instead, a backlog found there holds likes until it is consumed, and then
    they go."""
    posts = settings.topic(topics.POSTS)
    producer = Producer(kafka_connection(settings).config())
    for i in range(3):
        producer.produce(posts, f"post-{i}".encode(), partition=1)
    assert producer.flush(30) == 0
    consumer = Consumer(
        kafka_connection(settings).config(
            {"group.id": f"{settings.topic('flow-test')}", "isolation.level": "read_committed"}
        )
    )
    try:
        partitions = [TopicPartition(posts, p, 0) for p in range(settings.posts_partitions)]
        consumer.assign(partitions)
        consumer.pause(partitions)  # never fetched: librdkafka learns no end
        assert all(consumer.get_watermark_offsets(tp, cached=True)[1] < 0 for tp in partitions)
        ctx = Context(
            settings=settings,
            producer=producer,
            output=cast(Output, None),  # flow control writes nothing
            clock=time.monotonic,
            watermarks=lambda topic, p: (0, 0),
        )
        ctx.consumed.update({(posts, p): 0 for p in range(settings.posts_partitions)})
        flow = FlowControl(consumer, ctx, rekeyed_until=lambda p: 0)
        flow.reset()
        assigned = {(posts, p) for p in range(settings.posts_partitions)}

        def released() -> bool:
            flow.update(assigned, set())
            return not flow.engagement_held

        def end_asked() -> int:
            flow.update(assigned, set())
            return flow.asked.get((posts, 1), (0.0, -1))[1]

        # Partition 1 holds 3 posts not consumed: held, with the end the broker gave.
        wait_until(lambda: end_asked() == 3, timeout=10, what="partition 1's end asked")
        assert not released()
        # Consumed: nothing is behind, and the hold ends (the other ends are 0).
        ctx.consumed[(posts, 1)] = 3
        wait_until(released, timeout=10, what="likes released")
    finally:
        consumer.close()
