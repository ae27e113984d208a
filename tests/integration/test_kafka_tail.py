"""The shared "read these partitions to the end, then follow them" reader
(mysocial.kafka.tail) against the real broker: start offsets, the one caught-up
report, batches with positions, stopping, and failing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import Message, Producer

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.tail import Batch, ReaderFailed, TailReader

Item = tuple[int, int, bytes]


def produce(settings: Settings, topic: str, counts: dict[int, int], tag: str) -> None:
    """counts[p] records on partition p, with values f"{tag}-{p}-{i}"."""
    producer = Producer(kafka_connection(settings).config())
    for p, n in counts.items():
        for i in range(n):
            producer.produce(topic, f"{tag}-{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0


def decode(msg: Message) -> Item:
    return (msg.partition() or 0, msg.offset() or 0, msg.value() or b"")


class Recorder:
    """What the reader handed over, as seen on the loop."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.positions: dict[tuple[str, int], int] = {}
        self.caught_up: list[list[Item]] = []  # the items applied at each report
        self.changed = asyncio.Event()

    def apply(self, batch: Batch[Item]) -> None:
        self.items.extend(batch.items)
        self.positions.update(batch.positions)
        self.changed.set()

    def on_caught_up(self) -> None:
        self.caught_up.append(list(self.items))

    async def until(self, condition: Any, timeout: float = 30.0) -> None:
        async def poll() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(poll(), timeout)


def test_reads_from_start_offsets_reports_caught_up_once_then_follows(
    settings: Settings,
) -> None:
    topic = settings.topic(topics.POSTS)  # 4 partitions in tests
    produce(settings, topic, {0: 5, 1: 3, 3: 1}, "old")

    async def scenario() -> None:
        seen = Recorder()
        reader: TailReader[Item] = TailReader(
            "test-tail",
            asyncio.get_running_loop(),
            kafka_connection(settings),
            [topic],
            decode,
            seen.apply,
            seen.on_caught_up,
            # p0 resumes at 2, p3 is already at its end, p1 and p2 are not named.
            starts={(topic, 0): 2, (topic, 3): 1},
            consumer_config={"fetch.wait.max.ms": 10},
        )
        reader.start()
        try:
            await reader.wait_caught_up(30)
            expected = [(0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (1, 2)]
            assert seen.caught_up == [seen.items]  # reported once, after the last batch
            assert sorted((p, o) for p, o, _ in seen.items) == expected
            assert all(value.startswith(b"old-") for _, _, value in seen.items)

            produce(settings, topic, {2: 2, 3: 1}, "new")
            await seen.until(lambda: len(seen.items) == 9)
            assert sorted((p, o) for p, o, v in seen.items if v.startswith(b"new-")) == [
                (2, 0),
                (2, 1),
                (3, 1),
            ]
            await seen.until(lambda: seen.positions.get((topic, 2)) == 2)
            assert seen.positions[(topic, 0)] == 5
            assert len(seen.caught_up) == 1
        finally:
            await asyncio.to_thread(reader.stop)
        assert not reader._thread.is_alive()
        assert not reader.failure.done()  # a requested stop is not a failure

    asyncio.run(scenario())


def test_nothing_to_read_is_caught_up_at_once(settings: Settings) -> None:
    topic = settings.topic(topics.COMMENTS)

    async def scenario() -> None:
        seen = Recorder()
        reader: TailReader[Item] = TailReader(
            "test-tail",
            asyncio.get_running_loop(),
            kafka_connection(settings),
            [topic],
            decode,
            seen.apply,
            seen.on_caught_up,
        )
        reader.start()
        try:
            await reader.wait_caught_up(30)
            assert seen.caught_up == [[]]
        finally:
            await asyncio.to_thread(reader.stop)

    asyncio.run(scenario())


@pytest.mark.parametrize("where", ["decode", "apply"])
def test_an_exception_in_a_callback_fails_the_reader(settings: Settings, where: str) -> None:
    topic = settings.topic(topics.POSTS)
    produce(settings, topic, {0: 3}, "old")
    boom = RuntimeError(f"{where} failed")

    def failing_decode(msg: Message) -> Item:
        if where == "decode":
            raise boom
        return decode(msg)

    def failing_apply(batch: Batch[Item]) -> None:
        raise boom

    async def scenario() -> None:
        seen = Recorder()
        reader: TailReader[Item] = TailReader(
            "test-tail",
            asyncio.get_running_loop(),
            kafka_connection(settings),
            [topic],
            failing_decode,
            failing_apply if where == "apply" else seen.apply,
            seen.on_caught_up,
        )
        reader.start()
        with pytest.raises(ReaderFailed, match=f"{where} failed"):
            await reader.wait_caught_up(30)
        assert reader.failure.result() is boom
        await asyncio.to_thread(reader._thread.join, 10)
        assert not reader._thread.is_alive()
        assert seen.caught_up == []
        await asyncio.to_thread(reader.stop)

    asyncio.run(scenario())


def test_a_missing_topic_fails_the_reader(settings: Settings) -> None:
    async def scenario() -> None:
        reader: TailReader[Item] = TailReader(
            "test-tail",
            asyncio.get_running_loop(),
            kafka_connection(settings),
            [settings.topic("never-provisioned")],
            decode,
            lambda batch: None,
            lambda: None,
        )
        reader.start()
        with pytest.raises(ReaderFailed, match="UNKNOWN_TOPIC_OR_PART"):
            await reader.wait_caught_up(60)
        await asyncio.to_thread(reader.stop)

    asyncio.run(scenario())


def test_start_offsets_must_be_real_offsets(settings: Settings) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="OFFSET_BEGINNING"):
            TailReader(
                "test-tail",
                loop,
                kafka_connection(settings),
                ["x"],
                decode,
                lambda batch: None,
                lambda: None,
                starts={("x", 0): -1},  # OFFSET_END: "caught up" would mean nothing
            )
    finally:
        loop.close()
