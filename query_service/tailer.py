"""Feeding the read model from Kafka.

A background thread (mysocial.kafka.tail) reads every partition of
`posts_with_counts`, `post_comments` and `trending_posts` (read_committed, no consumer
group: every instance serves every post) from the next offset the local store has
applied, or from the beginning (mysocial.kafka.warm_start decides), decodes records, and
hands them to the event loop in batches with the offsets they reach; the loop applies
a batch in one go (one RocksDB write, offsets included) and only then is the next one
sent, so a slow loop slows the reading instead of piling up memory. Once every
partition has reached the end it had when the service started, the service is ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from mysocial import post_comments, trace
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.tail import Batch, Key, TailReader
from mysocial.log import get_logger
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from query_service import metrics

log = get_logger("query.tailer")

POST, COMMENT, TRENDING = 1, 2, 3

# The tailer's fetch.wait.max.ms: how long an idle fetch waits for a commit (see below).
TAILER_FETCH_WAIT_MS = 200


@dataclass(slots=True)
class Item:
    kind: int
    partition: int
    offset: int
    key: str
    value: Any
    time_ms: int
    # (correlation ids, traceparents) a posts_with_counts record's headers carry
    traces: tuple[list[str], list[str]] | None = None


Apply = Callable[[list[Item], Mapping[Key, int]], None]


class Tailer:
    """Reads the projections into the read model on the given loop.

    The reading is a mysocial.kafka.tail.TailReader; this class knows the topics, how
    to decode their records, and the fetch settings they need. If the reader dies,
    `failure` completes and the query service stops (see query_service.server).
    """

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        apply: Apply,
        on_ready: Callable[[], None],
        starts: Mapping[Key, int] | None = None,
        ready_fields: Mapping[str, Any] | None = None,
    ) -> None:
        """starts: next offset per (topic, partition) (default: the beginning);
        ready_fields: added to the `read_models_ready` log line."""
        self.settings = settings
        self.ready_fields = dict(ready_fields or {})
        self.loop = loop
        self.apply = apply
        self.on_ready = on_ready
        self.topic_posts = settings.topic(topics.POSTS_WITH_COUNTS)
        self.topic_comments = settings.topic(topics.POST_COMMENTS)
        self.topic_trending = settings.topic(topics.TRENDING_POSTS)
        self.kinds = {
            self.topic_posts: POST,
            self.topic_comments: COMMENT,
            self.topic_trending: TRENDING,
        }
        self._started = time.monotonic()
        self.ready = False  # loaded: from then on apply delays are observed
        self.reader: TailReader[Item] = TailReader(
            "kafka-tailer",
            loop,
            kafka_connection(settings),
            list(self.kinds),
            self._decode_message,
            self._apply,
            self._mark_ready,
            starts=starts,
            consumer_config={
                "group.id": f"{settings.topic('mysocial.query')}.unused",
                # The broker answers a waiting read_committed fetch when a commit
                # marker moves the last stable offset (a bare transactional writer
                # and a read_committed consumer configured as this one, 500 ms wait:
                # visible 2.3 ms p50 after the commit returned), so the wait bounds
                # only how often an idle tailer asks.
                # At 5 ms its 97-partition fetches cost the broker 0.02-0.07 more
                # cores at 100 likes/s than at 200 ms, which in an interleaved A/B
                # kept the probe's p50 equal or better (bench/NOTES.md, 2026-12-02).
                "fetch.wait.max.ms": TAILER_FETCH_WAIT_MS,
                "fetch.min.bytes": 1,
                # Read-model lag per partition for /metrics (query_service.metrics).
                "stats_cb": metrics.COLLECTOR.tailer_stats.update,
                "statistics.interval.ms": 5_000,
            },
        )

    @property
    def failure(self) -> asyncio.Future[BaseException]:
        """Completes when the reader died (it logged why)."""
        return self.reader.failure

    def start(self) -> None:
        self._started = time.monotonic()
        self.reader.start()

    def stop(self) -> None:
        self.reader.stop()

    def _apply(self, batch: Batch[Item]) -> None:
        # End-of-partition positions alone are stored too: the next start skips the
        # commit markers they passed.
        self.apply(batch.items, batch.positions)
        if self.ready and batch.items:
            metrics.applied(batch.items[0].time_ms)

    def _mark_ready(self) -> None:
        self.ready = True
        log.info(
            "read_models_ready",
            records=self.reader.records,
            load_s=round(time.monotonic() - self._started, 3),
            **self.ready_fields,
        )
        self.on_ready()

    def _decode_message(self, msg: Message) -> Item | None:
        return self._decode(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg)

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
                # Trace ids only for live changes: a (re)load has no stream to show them.
                headers = msg.headers() if self.ready else None
                traced = trace.from_headers(headers) if headers else None
                return Item(POST, partition, offset, key.decode(), parsed, time_ms, traced)
            if kind == COMMENT:
                record = post_comments.decode(key, value, msg.headers(), partition)
                return Item(COMMENT, partition, offset, record.post_id, record, time_ms)
            if value is None:
                return None
            ranking = res.TrendingRanking()
            ranking.ParseFromString(value)
            return Item(TRENDING, partition, offset, "", ranking, time_ms)
        except Exception as exc:  # malformed record: skip it, keep serving
            log.warning(
                "undecodable_record",
                topic=topic,
                partition=partition,
                offset=offset,
                error=str(exc),
            )
            return None
