"""posts_with_counts: every live post with its like and comment counts.

Task p owns partition p of likes, comments and posts-by-id, its local state (one
key prefix of the instance's RocksDB, processor/local_store.py) and partition p of
the changelog and of posts_with_counts. The per-event rules run in a Core
(processor/core.py: compiled by default, the Python rules on request), which takes
whole consumed batches and stops at whatever it cannot apply itself.

At commit, each task's changed keys go to the changelog, each changed post to
posts_with_counts (one record per post per commit, however many events touched it,
with the correlation ids and traceparents of those events as headers)
and each comment an event touched to post_comments (the comment as it is now, or a
tombstone; in the order of the events, with the newest one's offset in headers);
listeners (the trending stage) see the changed post records. After Kafka committed,
the same keys reach RocksDB with the changelog offset they correspond to.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message

from mysocial import otel, trace
from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.log import get_logger
from processor.core import ROUTE_OF_CONTRACT, CommentChange, Stop, apply_checked, make_core
from processor.headers import SRC_OFFSET, SRC_PARTITION
from processor.local_store import LocalStore, TaskStore
from processor.projection import Context, Offsets, Projection
from processor.restore import Restoration
from processor.trending import TrendingConfig

log = get_logger("processor.counts")

LOCAL_STATE_MAX_AGE_S = 12 * 3600  # well inside the changelog's delete.retention.ms
CACHED_POSTS_PER_TASK = 50_000


class CountsListener(Protocol):
    """Downstream of the counts, inside the same task (the trending local stage)."""

    def counts_started(self, partition: int, posts: Iterator[st.PostRecord]) -> None: ...

    def counts_stopped(self, partition: int, closed: bool) -> None: ...

    def counts_changed(self, partition: int, changed: list[st.PostRecord], now: float) -> None: ...


class PostsWithCounts(Projection):
    name = "posts_with_counts"
    sources = (topics.POSTS_BY_ID, topics.LIKES, topics.COMMENTS)

    def __init__(
        self, ctx: Context, trending: TrendingConfig, listeners: list[CountsListener]
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        t = settings.topic
        self.partitions = settings.copartitions
        self.topic_changelog = t(topics.PROCESSOR_CHANGELOG)
        self.topic_output = t(topics.POSTS_WITH_COUNTS)
        self.topic_comments = t(topics.POST_COMMENTS)
        # Full topic name -> contract name of the topics this projection consumes.
        self.contract = {t(name): name for name in self.sources}
        self.core = make_core(
            settings.processor_core,
            # Only its own topics: the core stops at any other record (Stop.PYTHON for
            # a topic it has no route for) and apply() hands it back to the engine.
            {t(name): ROUTE_OF_CONTRACT[name] for name in self.sources},
            self.partitions,
            trending,
        )
        state_path = (
            Path(settings.processor_state_dir)
            / f"{settings.topic_namespace}{settings.processor_instance_id}"
        )
        self.store = LocalStore(state_path, cache_mb=settings.processor_cache_mb)
        self.listeners = listeners
        self.stores: dict[int, TaskStore] = {}  # running tasks
        self.changelog_next: dict[int, int] = {}
        self.outputs = 0
        self._span: Any = None  # the open transaction's span (mysocial/otel.py), if on

    # -- tasks --------------------------------------------------------------------------
    def restorations(self, partition: int, committed: Offsets) -> list[Restoration]:
        """Replay the changelog from the local checkpoint (or from the beginning when
        the local copy is missing, older than the changelog's start, or stale)."""
        store = self.store.task(partition)
        low, high = self.ctx.watermarks(self.topic_changelog, partition)
        ckpt = store.checkpoint()
        start = OFFSET_BEGINNING
        if ckpt is not None and ckpt[0] >= low and time.time() - ckpt[1] < LOCAL_STATE_MAX_AGE_S:
            start = ckpt[0]
        else:
            store.wipe()
        if (start != OFFSET_BEGINNING and start >= high) or (
            start == OFFSET_BEGINNING and high <= low
        ):
            return []

        def apply(msgs: list[Message]) -> None:
            store.restore([(m.key() or b"", m.value()) for m in msgs], (msgs[-1].offset() or 0) + 1)

        return [Restoration(self.topic_changelog, partition, start, high, apply)]

    def start(self, partition: int) -> None:
        store = self.store.task(partition)
        self.core.add_task(partition, store)
        self.stores[partition] = store
        posts = (_record(raw) for _, raw in store.scan(b"P"))
        for listener in self.listeners:
            listener.counts_started(partition, posts)

    def suspend(self, partition: int) -> None:
        if self.stores.pop(partition, None) is not None:
            self.core.remove_task(partition)
        for listener in self.listeners:
            listener.counts_stopped(partition, closed=False)

    def close(self, partition: int) -> None:
        for listener in self.listeners:
            listener.counts_stopped(partition, closed=True)

    # -- records --------------------------------------------------------------------------
    def apply(self, msgs: list[Message], start: int) -> int:
        """Hand msgs[start:] to the core; apply here what it leaves to Python (in order)."""
        core, positions, consumed = self.core, self.ctx.positions, self.ctx.consumed
        i = start
        while True:
            i, why = core.process(msgs, i, positions, consumed)
            if why != Stop.PYTHON or msgs[i].topic() not in self.contract:
                break  # done, or a record of another projection (or an error)
            msg = msgs[i]
            i += 1
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            positions[(topic, partition)] = offset + 1
            consumed[(topic, partition)] = offset + 1
            owned = partition in self.stores
            reason = apply_checked(core, msg, self.contract[topic], self.partitions, owned)
            if reason is not None:
                self.ctx.output.dead_letter(msg, reason)
        return i

    # -- commit --------------------------------------------------------------------------
    def prepare_commit(self, now: float) -> None:
        for event, fields in self.core.take_warnings():  # raised by the rules meanwhile
            log.warning(event, **fields)
        self.changelog_next.clear()
        traced: list[str] = []  # traceparents of the events this transaction carries
        for p in self.stores:
            self._produce_comments(p, self.core.drain_comments(p))
            changed = self.core.drain(p)
            # One record per changed key, the bulk of what the processor writes; the
            # last one reports its offset (the store's checkpoint).
            self.core.produce_changelog(
                p, self.ctx.producer, self.topic_changelog, self._changelog_delivered
            )
            records = []
            for post_id, value, raw, (ids, parents) in changed:
                # The trace context of the events it includes: repeated headers.
                headers = trace.to_headers(ids, parents) if ids else None
                traced += parents
                self.ctx.output.produce(self.topic_output, post_id.encode(), value, p, headers)
                records.append(_record(raw))
            self.outputs += len(changed)
            for listener in self.listeners:
                listener.counts_changed(p, records, now)
        if otel.enabled():
            self._span = otel.start_linked(
                "processor commit posts_with_counts",
                traced,
                instance=self.ctx.settings.processor_instance_id,
            )

    def _produce_comments(self, partition: int, changes: list[CommentChange]) -> None:
        """post_comments records, in event order (readers take the headers' offset as
        how far the partition's comment events are reflected)."""
        source = str(partition).encode()
        for offset, post_id, comment_id, value in changes:
            self.ctx.output.produce(
                self.topic_comments,
                f"{post_id}/{comment_id}".encode(),
                value,
                partition,
                headers=[(SRC_PARTITION, source), (SRC_OFFSET, str(offset).encode())],
            )
        self.outputs += len(changes)

    def _changelog_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            self.changelog_next[partition] = offset + 1

    def _end_span(self, outcome: str) -> None:
        if self._span is not None:
            self._span.set_attribute("outcome", outcome)
            self._span.end()
            self._span = None

    def post_commit(self) -> None:
        """The committed keys reach RocksDB, with their changelog offset (the store
        itself never calls into the core: it receives a filled batch)."""
        self._end_span("committed")
        for p, store in self.stores.items():
            batch = store.batch()
            self.core.write_batch(p, batch, store.prefix)
            store.write(batch, self.changelog_next.get(p))
            self.core.trim_cache(p, CACHED_POSTS_PER_TASK)

    def abort(self) -> None:
        self._end_span("aborted")
        for p in self.stores:
            self.core.discard(p)

    def stats(self) -> dict[str, int]:
        per_task = [self.core.stats(p) for p in self.stores]
        return {
            "outputs": self.outputs,
            "tasks": len(self.stores),
            "unauthorized": sum(s.unauthorized for s in per_task),
            "store_reads": sum(s.store_reads for s in per_task),
        }

    def shutdown(self) -> None:
        self.store.close()


def _record(raw: bytes) -> st.PostRecord:
    rec = st.PostRecord()
    rec.ParseFromString(raw)
    return rec
