"""The ChangelogReader against a real broker: exact ranges, to the end, cancel, and a
transaction left open by a stopped writer."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection
from processor import clients
from processor.restore import ChangelogReader, Restoration
from tests.support.helpers import wait_until


def _topic(settings: Settings, name: str, partitions: int, records: int) -> str:
    topic = settings.topic(name)
    admin = kafka_connection(settings).admin()
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(30)
    producer = Producer(kafka_connection(settings).config())
    for p in range(partitions):
        for i in range(records):
            producer.produce(topic, f"{p}:{i}".encode(), f"k{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    return topic


def test_each_restoration_gets_exactly_its_range(settings: Settings) -> None:
    topic = _topic(settings, "restore-test", 3, 20)
    got: dict[int, list[bytes]] = {0: [], 1: [], 2: []}

    def into(p: int):
        def apply(msgs: list[Message]) -> None:
            got[p].extend(m.value() or b"" for m in msgs)

        return apply

    reader = ChangelogReader(clients.restore_consumer(settings))
    try:
        reader.register(
            "a",
            [
                Restoration(topic, 0, OFFSET_BEGINNING, 20, into(0)),  # to the end
                Restoration(topic, 1, 5, 12, into(1)),  # [5, 12)
            ],
        )
        reader.register("b", [Restoration(topic, 2, 3, 3, into(2))])  # empty range
        assert reader.done("b") and not reader.done("a")
        wait_until(lambda: reader.step() >= 0 and reader.done("a"), 30, what="restore a")
        assert got[0] == [f"0:{i}".encode() for i in range(20)]
        assert got[1] == [f"1:{i}".encode() for i in range(5, 12)]
        assert got[2] == []
        assert reader.restored("a") == 27 and not reader.active()
    finally:
        reader.consumer.close()


def test_a_cancelled_restoration_stops_and_others_continue(settings: Settings) -> None:
    topic = _topic(settings, "restore-cancel", 2, 50)
    got: list[bytes] = []
    reader = ChangelogReader(clients.restore_consumer(settings))
    try:
        reader.register("gone", [Restoration(topic, 0, OFFSET_BEGINNING, 50, lambda m: None)])
        reader.register(
            "kept",
            [Restoration(topic, 1, 10, 50, lambda ms: got.extend(m.value() or b"" for m in ms))],
        )
        reader.cancel("gone")
        assert not reader.done("gone")
        wait_until(lambda: reader.step() >= 0 and reader.done("kept"), 30, what="restore kept")
        assert got == [f"1:{i}".encode() for i in range(10, 50)]
    finally:
        reader.consumer.close()


def test_a_restore_waits_for_an_open_transaction_and_misses_nothing_after_it(
    settings: Settings,
) -> None:
    """A stopped instance left a transaction open; the partition's next owner committed
    records after it. read_committed reports the end at the open transaction (the last
    stable offset): a restore that stopped there would lose the committed records
    behind it (KAFKA-10167). It must wait, then read to the high watermark."""
    topic = _topic(settings, "restore-open-txn", 1, 0)

    def transactional(tid: str) -> Producer:
        p = Producer(kafka_connection(settings).config({"transactional.id": tid}))
        p.init_transactions(30)
        return p

    owner = transactional(settings.topic("owner"))
    owner.begin_transaction()
    owner.produce(topic, b"before", b"k", partition=0)
    owner.commit_transaction(30)
    zombie = transactional(settings.topic("zombie"))
    zombie.begin_transaction()
    zombie.produce(topic, b"never visible", b"k", partition=0)
    zombie.flush(30)  # written, not committed: the stopped instance's transaction
    owner.begin_transaction()
    owner.produce(topic, b"after", b"k", partition=0)
    owner.commit_transaction(30)
    marks = clients.watermark_consumer(settings)
    _, high = marks.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    marks.close()
    assert high == 5  # 3 records and 2 commit markers (read_committed would say 2)
    consumer = clients.restore_consumer(settings)
    got: list[bytes] = []
    reader = ChangelogReader(consumer)
    try:
        reader.register(
            "t",
            [
                Restoration(
                    topic,
                    0,
                    OFFSET_BEGINNING,
                    high,
                    lambda ms: got.extend(m.value() or b"" for m in ms),
                )
            ],
        )
        for _ in range(20):  # a second of stepping: the end stays at the open transaction
            reader.step()
        assert got == [b"before"] and not reader.done("t")
        zombie.abort_transaction(30)  # as the broker does when its timeout expires
        wait_until(lambda: reader.step() >= 0 and reader.done("t"), 30, what="restore")
        assert got == [b"before", b"after"]
    finally:
        consumer.close()
