"""Feeding the read model from Kafka.

A background thread reads every partition of `posts_with_counts`, `comments` and
`trending_posts` from the beginning (read_committed, no consumer group: every
instance serves every post), decodes records, and hands them to the event loop in
batches; the loop applies a batch in one go and only then is the next one sent, so
a slow loop slows the reading instead of piling up memory. Once every partition
has reached the end it had when the service started, the service is ready.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from mysocial.config import Settings
from mysocial.events import InvalidEvent, check, event_time_ms
from mysocial.kafka import client_logger, consume_batch, topics
from mysocial.kafka.reader import partitions_of, watermarks
from mysocial.log import get_logger
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res

log = get_logger("query.tailer")

POST, COMMENT, TRENDING = 1, 2, 3


@dataclass(slots=True)
class Item:
    kind: int
    partition: int
    offset: int
    key: str
    value: Any
    time_ms: int


Apply = Callable[[list[Item]], None]


class Tailer:
    """Reads the projections into the read model on the given loop."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        apply: Apply,
        on_ready: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.apply = apply
        self.on_ready = on_ready
        self.topic_posts = settings.topic(topics.POSTS_WITH_COUNTS)
        self.topic_comments = settings.topic(topics.COMMENTS)
        self.topic_trending = settings.topic(topics.TRENDING_POSTS)
        self.comment_partitions = settings.copartitions
        self.kinds = {
            self.topic_posts: POST,
            self.topic_comments: COMMENT,
            self.topic_trending: TRENDING,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-tailer", daemon=True)
        self.ready = False
        self.applied = 0
        self.error: BaseException | None = None
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"{settings.topic('mysocial.query')}.unused",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # Not LONG_POLL_MS: the processor's output is transactional, and the
                # broker does not answer a waiting read_committed fetch when the commit
                # marker lands (measured at 500 ms: freshness p50 7 -> 20 ms).
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
                "logger": client_logger(),
            }
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _assign(self) -> dict[tuple[str, int], int]:
        """Assign everything from the beginning; returns the end offset of each partition."""
        ends: dict[tuple[str, int], int] = {}
        assignment = []
        for topic in self.kinds:
            for p in partitions_of(self.consumer, topic, 30):
                low, high = watermarks(self.consumer, topic, p, 30)
                if high > low:
                    ends[(topic, p)] = high
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        self.consumer.assign(assignment)
        return ends

    def _run(self) -> None:
        try:
            started = time.monotonic()
            behind = self._assign()
            log.info("read_models_loading", partitions_with_data=len(behind))
            if not behind:
                self._mark_ready(started)
            while not self._stop.is_set():
                msgs = consume_batch(self.consumer, 5000, 0.1)
                if not msgs:
                    continue
                batch: list[Item] = []
                for msg in msgs:
                    err = msg.error()
                    topic, partition, offset = (
                        msg.topic() or "",
                        msg.partition() or 0,
                        msg.offset() or 0,
                    )
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            behind.pop((topic, partition), None)
                        else:
                            log.warning("consume_error", error=str(err))
                        continue
                    end = behind.get((topic, partition))
                    if end is not None and offset + 1 >= end:
                        del behind[(topic, partition)]
                    item = self._decode(topic, partition, offset, msg)
                    if item is not None:
                        batch.append(item)
                if batch:
                    self._hand_over(batch)
                    self.applied += len(batch)
                if not self.ready and not behind:
                    self._mark_ready(started)
        except BaseException as exc:  # the service must notice a dead tailer
            self.error = exc
            log.exception("tailer_failed")
        finally:
            self.consumer.close()

    def _hand_over(self, batch: list[Item]) -> None:
        """Apply a batch on the event loop and wait for it (back-pressure: one at a time).

        A plain callback and future: no coroutine and task per batch, which the loop
        would otherwise pay hundreds of times a second under load.
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def apply() -> None:
            try:
                self.apply(batch)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self.loop.call_soon_threadsafe(apply)
        done.result()

    def _mark_ready(self, started: float) -> None:
        self.ready = True
        log.info(
            "read_models_ready", records=self.applied, load_s=round(time.monotonic() - started, 3)
        )
        self.loop.call_soon_threadsafe(self.on_ready)

    def _decode(self, topic: str, partition: int, offset: int, msg: Any) -> Item | None:
        kind = self.kinds[topic]
        key = msg.key()
        value = msg.value()
        time_ms = msg.timestamp()[1]
        try:
            if kind == POST:
                if key is None:
                    return None
                parsed: Any = None
                if value is not None:
                    parsed = ev.PostWithCounts()
                    parsed.ParseFromString(value)
                return Item(POST, partition, offset, key.decode(), parsed, time_ms)
            if kind == COMMENT:
                checked = check(topics.COMMENTS, key, value, partition, self.comment_partitions)
                event = checked.event
                return Item(COMMENT, partition, offset, "", event, event_time_ms(event, time_ms))
            if value is None:
                return None
            ranking = res.TrendingRanking()
            ranking.ParseFromString(value)
            return Item(TRENDING, partition, offset, "", ranking, time_ms)
        except InvalidEvent:
            return None  # the processor dead-letters it: it does not count anywhere
        except Exception as exc:  # malformed record: skip it, keep serving
            log.warning(
                "undecodable_record",
                topic=topic,
                partition=partition,
                offset=offset,
                error=str(exc),
            )
            return None
