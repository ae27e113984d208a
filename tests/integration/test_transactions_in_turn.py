"""The processor's transactions alternate between its two transactional producers,
against a real broker: what commits is visible once and in order, what aborts is not,
and a restarted instance fences both of its predecessor's producers."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from processor import clients
from processor.checkpoint import Transaction
from processor.errors import FatalProcessorError
from processor.output import Output
from processor.projection import Context, Projection
from tests.support.helpers import wait_until


class Numbered(Projection):
    """Writes one numbered record into each transaction it takes part in (keyed: the
    topic is compacted)."""

    name = "numbered"

    def __init__(self, ctx: Context, topic: str) -> None:
        self.ctx = ctx
        self.topic = topic
        self.next = 0

    def prepare_commit(self, now: float) -> None:
        self.ctx.output.produce(self.topic, b"turn", str(self.next).encode(), 0)
        self.next += 1


def _setup(settings: Settings) -> tuple[list[Producer], Context, Numbered, Transaction]:
    errors: list[KafkaError] = []  # a fenced producer reports here too; the API raises
    producers = [
        clients.transactional_producer(settings, errors.append, index=i)
        for i in range(clients.PRODUCERS)
    ]
    for producer in producers:
        producer.init_transactions(30)
    ctx = Context(
        settings,
        producers[0],
        Output(producers[0], settings.topic(topics.DEAD_LETTER)),
        time.time,
        lambda topic, p: (0, 0),
    )
    topic = settings.topic(topics.POSTS_WITH_COUNTS)
    numbered = Numbered(ctx, topic)
    consumer = Consumer(kafka_connection(settings).config({"group.id": settings.topic("turns")}))
    txn = Transaction(ctx, consumer, [numbered], producers=producers)
    return producers, ctx, numbered, txn


def _committed_values(settings: Settings, expected: int) -> list[bytes]:
    consumer = Consumer(
        kafka_connection(settings).config(
            {
                "group.id": settings.topic("turns-reader"),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.assign([TopicPartition(settings.topic(topics.POSTS_WITH_COUNTS), 0, 0)])
    seen: list[bytes] = []

    def read() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            seen.append(msg.value() or b"")
        return len(seen) >= expected

    try:
        wait_until(read, 30, what=f"{expected} committed records")
        extra = consumer.poll(1.0)  # nothing past them (an aborted record would show)
        assert extra is None or extra.error() is not None, extra.value()
    finally:
        consumer.close()
    return seen


def test_transactions_alternate_producers_and_commit_in_order(settings: Settings) -> None:
    producers, ctx, numbered, txn = _setup(settings)
    used: list[int] = []
    for n in range(12):
        txn.begin()
        used.append(producers.index(ctx.producer))
        if n == 5:  # an aborted transaction: its record must never be visible
            numbered.prepare_commit(time.time())
            txn.abort_and_rewind("test")
            continue
        txn.commit()
    assert used == [0, 1] * 6
    assert txn.commits == 11 and txn.aborts == 1
    visible = _committed_values(settings, 11)
    assert visible == [str(n).encode() for n in range(12) if n != 5]


@pytest.mark.parametrize("fenced", [0, 1])
def test_a_restarted_instance_fences_each_producer(settings: Settings, fenced: int) -> None:
    txn = _setup(settings)[3]
    for _ in range(fenced + 2):  # producers 0 and 1 committed; `fenced` takes the next
        txn.begin()
        txn.commit()
    # The successor's producer of that index (same instance id) fences this one's.
    successor = clients.transactional_producer(settings, lambda err: None, index=fenced)
    successor.init_transactions(30)
    with pytest.raises(FatalProcessorError):
        txn.begin()
        txn.commit()
    assert _committed_values(settings, fenced + 2) == [str(n).encode() for n in range(fenced + 2)]
