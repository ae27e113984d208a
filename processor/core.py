"""The per-event rules behind one interface, in two implementations.

The posts_with_counts projection (processor/projections/posts_with_counts.py) hands
each consumed batch to a Core, which decodes, checks and applies the events of the
partitions it owns, and at commit time gives back the changed posts and the changed
keys for the changelog and RocksDB.

- NativeCore (the default) is processor_native, Rust compiled by `make`
  (processor/native): the whole per-message loop runs without Python bytecode, at a
  fraction of the CPU per event that the Python rules take (docs/BENCHMARKS.md).
- PyCore is the same contract in plain Python over TaskState (processor/rules.py):
  the executable specification of the rules. tests/unit/test_native_core.py runs both
  on the same random records and requires identical records, outputs and changelogs;
  MYSOCIAL_PROCESSOR_CORE=python runs the processor on it.

`process` stops at the first record it does not apply itself (a consume error, a
record of a topic it has no route for, an event that is invalid or that the native
decoder leaves to Python's protobuf) and returns its index, so the order of each
partition's events is kept; `apply_checked` then applies such an event through
`apply` with its canonical encoding, or says why to dead-letter it.

This module is the seam with the compiled core: route and stop codes (Route, Stop)
and the stats record (CoreStats) are defined here only, and processor_native takes
them by name when it is built; header names come from processor/headers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from confluent_kafka import Message, Producer

from mysocial import trace
from mysocial.events import InvalidEvent, check, event_time_ms
from mysocial.kafka import topics
from mysocial.v1 import events_pb2 as ev
from processor.headers import SRC_OFFSET
from processor.local_store import TaskStore
from processor.rules import LIVE, MAX_PENDING_PER_POST, PendingOverflow, TaskState
from processor.trending import TrendingConfig


class Route(IntEnum):
    """The input topics a core applies events of. Defined here only: the compiled
    core is given these codes by name when it is built."""

    POSTS_BY_ID = 0
    LIKES = 1
    COMMENTS = 2


class Stop(IntEnum):
    """Why process() returned (with the index of the record it stopped at). Defined
    here only, like Route."""

    DONE = 0  # every record handled
    ERROR = 1  # a consume error
    PYTHON = 2  # a record the core leaves to Python: another projection's topic, or
    # an event to check and apply (or dead-letter) through apply_checked


ROUTE_OF_CONTRACT = {
    topics.POSTS_BY_ID: Route.POSTS_BY_ID,
    topics.LIKES: Route.LIKES,
    topics.COMMENTS: Route.COMMENTS,
}
SOURCE_OF_ROUTE: dict[int, str] = {route: name for name, route in ROUTE_OF_CONTRACT.items()}
# Posts whose events were applied but not output (waiting for their post, or ignored):
# their traces are dropped past this many (as the compiled core does).
MAX_TRACED_WAITING = 4096


class CoreStats(NamedTuple):
    """A task's counters since it was added (both cores return this; its fields are
    the one list of them, which the compiled core fills by name)."""

    applied: int
    duplicates: int
    queued: int
    ignored_deleted: int
    unauthorized: int
    store_reads: int  # reads that went to the task's committed RocksDB


Positions = dict[tuple[str, int], int]
# The correlation ids and traceparents of the events a record includes (mysocial/trace.py).
Traces = tuple[list[str], list[str]]
# A changed post: (post_id, posts_with_counts value or None for a tombstone, PostRecord,
# its events' traces).
Change = tuple[str, bytes | None, bytes, Traces]
# (offset in `comments`, post id, comment id, post_comments value: a mysocial.v1.Comment,
# or None if deleted/unknown)
CommentChange = tuple[int, str, str, bytes | None]
OnDelivery = Callable[[Any, Message], None]


class Core(Protocol):
    """Per-partition state and the per-event loop (see the module docstring)."""

    max_pending: int  # events that may wait for a post that has not arrived

    def add_task(self, partition: int, store: TaskStore) -> None: ...

    def remove_task(self, partition: int) -> None: ...

    def process(
        self, msgs: list[Message], start: int, positions: Positions, consumed: Positions
    ) -> tuple[int, int]: ...

    def apply(self, partition: int, route: int, offset: int, event: bytes, time_ms: int) -> bool:
        """Apply a checked event (canonical encoding); False if its post's pending
        queue is full (nothing changed)."""
        ...

    def drain_comments(self, partition: int) -> list[CommentChange]:
        """Comments touched since the last drain, in source offset order; before drain()."""
        ...

    def drain(self, partition: int) -> list[Change]: ...

    def produce_changelog(
        self, partition: int, producer: Producer, topic: str, on_delivery: OnDelivery
    ) -> int: ...

    def write_batch(self, partition: int, batch: Any, prefix: bytes) -> int: ...

    def discard(self, partition: int) -> None: ...

    def trim_cache(self, partition: int, max_posts: int) -> None: ...

    def post(self, partition: int, post_id: str) -> bytes | None: ...

    def stats(self, partition: int) -> CoreStats: ...

    def take_warnings(self) -> list[tuple[str, dict[str, str]]]: ...


class CoreUnavailable(RuntimeError):
    """The configured core cannot run here (the compiled one is not built)."""


def make_core(
    kind: str,
    routes: Mapping[str, int],
    partitions: int,
    cfg: TrendingConfig,
    max_pending: int = MAX_PENDING_PER_POST,
) -> Core:
    """The core named by MYSOCIAL_PROCESSOR_CORE ("native" or "python")."""
    spec = CoreSpec(routes, partitions, cfg, max_pending)
    if kind == "python":
        return PyCore(spec)
    if kind != "native":
        raise ValueError(f"unknown processor core {kind!r} (native or python)")
    return NativeCore(spec)


@dataclass(frozen=True)
class CoreSpec:
    """What a core is built from: input topic -> route, the partition count of the
    co-partitioned topics, the trending constants and the pending-queue bound."""

    routes: Mapping[str, int]
    partitions: int
    cfg: TrendingConfig
    max_pending: int = MAX_PENDING_PER_POST


def src_offset(msg: Message) -> int:
    """The source offset a re-keyed post carries (projections/posts_by_id.py)."""
    headers = dict(msg.headers() or [])
    return int(headers.get(SRC_OFFSET) or b"-1")


def apply_checked(
    core: Core, msg: Message, source: str, partitions: int, owned: bool
) -> str | None:
    """An event the core left to Python: the dead-letter reason if it is invalid (or
    its post's pending queue is full), else None once applied through its canonical
    encoding (unknown fields dropped: what the native decoder reads without doubt).
    `owned`: whether this instance still owns the record's partition."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    try:
        checked = check(source, msg.key(), msg.value(), partition, partitions)
    except InvalidEvent as exc:
        return str(exc)
    if not owned:  # revoked inside this batch: another instance applies it
        return None
    applied_offset = src_offset(msg) if source == topics.POSTS_BY_ID else offset
    time_ms = event_time_ms(checked.event, msg.timestamp()[1])
    checked.event.DiscardUnknownFields()
    event = checked.event.SerializeToString()
    if not core.apply(partition, ROUTE_OF_CONTRACT[source], applied_offset, event, time_ms):
        return f"more than {core.max_pending} events wait for post {checked.post_id}"
    return None


class NativeCore:
    """processor_native.Core, plus what needs Python objects (the task's store)."""

    def __init__(self, spec: CoreSpec) -> None:
        try:
            import processor_native
        except ImportError as exc:
            raise CoreUnavailable(
                "the compiled processor core is not installed (processor_native): build it "
                "with `make deps`, or run the Python rules with MYSOCIAL_PROCESSOR_CORE=python"
            ) from exc

        self.max_pending = spec.max_pending
        self._core = processor_native.Core(
            list(spec.routes.items()),
            spec.partitions,
            spec.cfg.half_life_ms,
            spec.cfg.like_weight,
            spec.cfg.comment_weight,
            spec.max_pending,
            (topics.POSTS_BY_ID, topics.LIKES, topics.COMMENTS),
            {r.name: r.value for r in Route},
            {s.name: s.value for s in Stop},
            SRC_OFFSET,
        )
        core = self._core
        self.process = core.process
        self.apply = core.apply
        self.drain_comments = core.drain_comments
        self.drain = core.drain
        self.produce_changelog = core.produce_changelog
        self.write_batch = core.write_batch
        self.discard = core.discard
        self.trim_cache = core.trim_cache
        self.post = core.post
        self.take_warnings = core.take_warnings
        self.remove_task = core.remove_task

    def add_task(self, partition: int, store: TaskStore) -> None:
        self._core.add_task(partition, store.get, store.keys(b"E", b"C"))

    def stats(self, partition: int) -> CoreStats:
        return CoreStats(**self._core.stats(partition))


class _Overlay:
    """TaskState's Store over a task's committed RocksDB: reads see this
    transaction's writes; the writes wait here until write_batch."""

    def __init__(self, store: TaskStore) -> None:
        self.committed = store
        self.writes: dict[bytes, bytes | None] = {}
        self.store_reads = 0

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        self.store_reads += 1
        return self.committed.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.committed.scan(prefix)


class _PyTask:
    def __init__(self, store: TaskStore, cfg: TrendingConfig, max_pending: int) -> None:
        self.overlay = _Overlay(store)
        self.state = TaskState(self.overlay, cfg, max_pending=max_pending)
        self.committing: dict[bytes, bytes | None] = {}
        # post id -> traces of the events applied to it since its last output
        self.traces: dict[str, Traces] = {}

    def applied(self, post_id: str, event: ev.Event) -> None:
        if event.correlation_id:
            ids, parents = self.traces.get(post_id) or ([], [])
            self.traces[post_id] = (
                trace.merge(ids, [event.correlation_id]),
                trace.merge(parents, [event.traceparent]),
            )


class PyCore:
    """The Core contract in plain Python over processor/rules.py (the reference)."""

    def __init__(self, spec: CoreSpec) -> None:
        self.routes = spec.routes
        self.max_pending = spec.max_pending
        self.partitions = spec.partitions
        self.cfg = spec.cfg
        self.tasks: dict[int, _PyTask] = {}
        self.warnings: list[tuple[str, dict[str, str]]] = []

    def add_task(self, partition: int, store: TaskStore) -> None:
        self.tasks[partition] = _PyTask(store, self.cfg, self.max_pending)

    def remove_task(self, partition: int) -> None:
        self.tasks.pop(partition, None)

    def process(
        self, msgs: list[Message], start: int, positions: Positions, consumed: Positions
    ) -> tuple[int, int]:
        for i in range(start, len(msgs)):
            msg = msgs[i]
            if msg.error() is not None:
                return i, Stop.ERROR
            topic = msg.topic()
            route = self.routes.get(topic or "")
            if route is None:
                return i, Stop.PYTHON
            partition, offset = msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            source = SOURCE_OF_ROUTE[route]
            try:
                checked = check(source, msg.key(), msg.value(), partition, self.partitions)
            except InvalidEvent:
                return i, Stop.PYTHON
            task = self.tasks.get(partition)
            if task is not None:
                applied_offset = src_offset(msg) if route == Route.POSTS_BY_ID else offset
                time_ms = event_time_ms(checked.event, msg.timestamp()[1])
                try:
                    task.state.apply(source, applied_offset, checked.event, time_ms)
                except PendingOverflow:
                    return i, Stop.PYTHON
                task.applied(checked.post_id, checked.event)
            positions[(topic, partition)] = offset + 1
            consumed[(topic, partition)] = offset + 1
        return len(msgs), Stop.DONE

    def apply(self, partition: int, route: int, offset: int, event: bytes, time_ms: int) -> bool:
        decoded = ev.Event()
        decoded.ParseFromString(event)
        task = self.tasks[partition]
        try:
            task.state.apply(SOURCE_OF_ROUTE[route], offset, decoded, time_ms)
        except PendingOverflow:
            return False
        kind = decoded.WhichOneof("payload")
        assert kind is not None  # checked before it came here
        task.applied(getattr(decoded, kind).post_id, decoded)
        return True

    def drain_comments(self, partition: int) -> list[CommentChange]:
        return self.tasks[partition].state.drain_comments()

    def drain(self, partition: int) -> list[Change]:
        task = self.tasks[partition]
        changelog, changed = task.state.drain()
        task.committing.update(changelog)
        task.overlay.writes.clear()
        out: list[Change] = []
        for rec in changed:
            value = None
            if rec.status == LIVE:
                value = ev.PostWithCounts(
                    post=rec.post,
                    posts_applied_through=rec.posts_applied_through,
                    likes_applied_through=rec.likes_applied_through,
                    comments_applied_through=rec.comments_applied_through,
                ).SerializeToString()
            traces = task.traces.pop(rec.post.post_id, None) or ([], [])
            out.append((rec.post.post_id, value, rec.SerializeToString(), traces))
        if len(task.traces) > MAX_TRACED_WAITING:
            task.traces.clear()
        return out

    def produce_changelog(
        self, partition: int, producer: Producer, topic: str, on_delivery: OnDelivery
    ) -> int:
        records = list(self.tasks[partition].committing.items())
        for i, (key, value) in enumerate(records):
            kwargs: dict[str, Any] = {"on_delivery": on_delivery} if i == len(records) - 1 else {}
            while True:
                try:
                    producer.produce(topic, value, key, partition, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.05)
        return len(records)

    def write_batch(self, partition: int, batch: Any, prefix: bytes) -> int:
        task = self.tasks[partition]
        records, task.committing = task.committing, {}
        for key, value in records.items():
            if value is None:
                batch.delete(prefix + key)
            else:
                batch.put(prefix + key, value)
        return len(records)

    def discard(self, partition: int) -> None:
        task = self.tasks[partition]
        task.state.forget_cache()
        task.traces.clear()
        task.overlay.writes.clear()
        task.committing.clear()

    def trim_cache(self, partition: int, max_posts: int) -> None:
        self.tasks[partition].state.trim_cache(max_posts)

    def post(self, partition: int, post_id: str) -> bytes | None:
        rec = self.tasks[partition].state.post(post_id)
        return None if rec is None else rec.SerializeToString()

    def stats(self, partition: int) -> CoreStats:
        task = self.tasks[partition]
        s = task.state.stats
        return CoreStats(
            applied=s.applied,
            duplicates=s.duplicates,
            queued=s.queued,
            ignored_deleted=s.ignored_deleted,
            unauthorized=s.unauthorized,
            store_reads=task.overlay.store_reads,
        )

    def take_warnings(self) -> list[tuple[str, dict[str, str]]]:
        out, self.warnings = self.warnings, []
        return out
