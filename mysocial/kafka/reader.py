"""Reading whole topics and measuring consumer-group lag (audit, tests, benchmarks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from mysocial.kafka.connection import Cluster, connection_of

# While a broker restarts or a leader moves, metadata may briefly not know a
# partition: retried until the caller's deadline, then raised.
_RETRIABLE = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]  # the last value of each header
    timestamp_ms: int
    header_list: tuple[tuple[str, bytes], ...] = ()  # every header, repeats included


def to_record(msg: Any) -> Record:
    """A consumed confluent-kafka Message as a plain Record."""
    listed = tuple((str(k), bytes(v)) for k, v in (msg.headers() or []) if v is not None)
    return Record(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.key(),
        msg.value(),
        dict(listed),
        msg.timestamp()[1],
        listed,
    )


def _consumer(cluster: Cluster, isolation: str = "read_committed", **extra: Any) -> Consumer:
    config: dict[str, Any] = {
        "group.id": f"mysocial.reader.{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
    }
    config.update(extra)
    return Consumer(connection_of(cluster).config(config))


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float) -> tuple[int, int]:
    """(low, high) watermarks, retrying while a new partition's leader settles."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            return int(low), int(high)
        except KafkaException as exc:
            if exc.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def expired_starts(cluster: Cluster, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Partitions whose first records are gone (retention deleted them): partition ->
    first remaining offset."""
    consumer = _consumer(cluster)
    try:
        lows = {
            p: watermarks(consumer, topic, p, timeout)[0]
            for p in partitions_of(consumer, topic, timeout)
        }
    finally:
        consumer.close()
    return {p: low for p, low in lows.items() if low > 0}


def partitions_of(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    md = consumer.list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        raise KafkaException(
            meta.error if meta is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        )
    return sorted(meta.partitions)


def iter_topic(
    cluster: Cluster, topic: str, timeout: float = 60.0, isolation: str = "read_committed"
) -> Iterator[Record]:
    """Every visible record of topic from the beginning to its end at call time."""
    consumer = _consumer(cluster, isolation)
    try:
        ends = {
            p: watermarks(consumer, topic, p, timeout)[1]
            for p in partitions_of(consumer, topic, timeout)
        }
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} partitions {sorted(todo)} to the end")
            for msg in consumer.consume(10000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition() or 0)
                        continue
                    raise KafkaException(err)
                rec = to_record(msg)
                if rec.offset >= ends[rec.partition]:
                    todo.discard(rec.partition)
                    continue
                yield rec
                if rec.offset + 1 >= ends[rec.partition]:
                    todo.discard(rec.partition)
    finally:
        consumer.close()


def read_topic(
    cluster: Cluster, topic: str, timeout: float = 60.0, isolation: str = "read_committed"
) -> list[Record]:
    return list(iter_topic(cluster, topic, timeout, isolation))


def latest_by_key(cluster: Cluster, topic: str, timeout: float = 60.0) -> dict[bytes, bytes | None]:
    """The table view of a compacted topic: last value per key (None = tombstone)."""
    table: dict[bytes, bytes | None] = {}
    for rec in iter_topic(cluster, topic, timeout):
        if rec.key is not None:
            table[rec.key] = rec.value
    return table


def end_offsets(
    admin: Any, topic: str, partitions: int, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """High watermark of every partition of topic, in one request per broker."""
    from confluent_kafka.admin import OffsetSpec

    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}  # type: ignore[no-untyped-call]
    futures = admin.list_offsets(request, request_timeout=timeout)
    return {(tp.topic, tp.partition): fut.result().offset for tp, fut in futures.items()}


def stable_and_end_offsets(
    cluster: Cluster, topic: str, partitions: list[int], timeout: float
) -> dict[int, tuple[int, int]]:
    """Per partition: (last stable offset, high watermark); the first is lower while a
    transaction is open there."""
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    admin = connection_of(cluster).admin()
    ends = {}
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        request = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}  # type: ignore[no-untyped-call]
        futures = admin.list_offsets(request, isolation_level=level, request_timeout=timeout)
        ends[level] = {tp.partition: fut.result().offset for tp, fut in futures.items()}
    lso, hw = ends[IsolationLevel.READ_COMMITTED], ends[IsolationLevel.READ_UNCOMMITTED]
    return {p: (lso[p], hw[p]) for p in partitions}


def stable_partitions(
    cluster: Cluster, topic: str, partitions: list[int], timeout: float
) -> dict[int, bool]:
    """Per partition: True when no transaction is open (last stable offset = end)."""
    offsets = stable_and_end_offsets(cluster, topic, partitions, timeout)
    return {p: lso >= hw for p, (lso, hw) in offsets.items()}


def last_visible_offsets(
    cluster: Cluster, topic: str, timeout: float = 30.0, transactional: bool = True
) -> dict[int, tuple[int, bool]]:
    """Per partition: (offset just past the last committed data record, settled).

    On transactional topics the high watermark also counts commit markers, so a fully
    caught-up consumer has committed the first value, not the watermark. `settled` is
    False while a transaction is still open on the partition (its last stable offset
    is below the high watermark): records may still appear below the end, so nobody
    can be "caught up" yet. Non-transactional topics: (high watermark, True).
    """
    consumer = _consumer(cluster, "read_committed", **{"fetch.wait.max.ms": 10})
    try:
        marks = {
            p: watermarks(consumer, topic, p, timeout)
            for p in partitions_of(consumer, topic, timeout)
        }
        if not transactional:
            return {p: (high, True) for p, (_, high) in marks.items()}
        stable = stable_partitions(cluster, topic, list(marks), timeout)
        out = {p: (0, stable[p]) for p in marks}
        window = 64
        todo = {p for p, (low, high) in marks.items() if high > low}
        deadline = time.monotonic() + timeout
        while todo:
            starts = {p: max(marks[p][0], marks[p][1] - window) for p in todo}
            consumer.assign([TopicPartition(topic, p, starts[p]) for p in todo])
            last = {p: -1 for p in todo}
            pending = set(todo)
            while pending:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not find the end of {topic}")
                for msg in consumer.consume(1000, 0.2):
                    err = msg.error()
                    part = msg.partition() or 0
                    if err is not None and err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(part)
                    elif err is None:
                        last[part] = max(last[part], msg.offset() or 0)
            consumer.unassign()
            for p in list(todo):
                settled = stable[p]
                if last[p] >= 0:
                    out[p] = (last[p] + 1, settled)
                    todo.discard(p)
                elif starts[p] == marks[p][0]:
                    out[p] = (0, settled)  # only markers / aborted records: nothing visible
                    todo.discard(p)
            window *= 8
        return out
    finally:
        consumer.close()


def committed_offsets(
    cluster: Cluster, group: str, topic: str, timeout: float = 30.0
) -> dict[int, int]:
    """The group's committed offset on every partition of topic (0 where it has none).

    librdkafka asks for stable offsets (KIP-447): while a transaction of the group is
    open on its offsets this waits, and raises KafkaException once timeout passed."""
    consumer = _consumer(cluster, **{"group.id": group})
    try:
        parts = partitions_of(consumer, topic, timeout)
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
        return {tp.partition: max(tp.offset, 0) for tp in got}
    finally:
        consumer.close()


def partition_lag(
    cluster: Cluster, group: str, topic: str, transactional: bool, timeout: float = 30.0
) -> dict[int, tuple[int, int, bool]]:
    """Per partition of topic: (the group's committed offset, the end, settled), with
    the end and `settled` as last_visible_offsets gives them."""
    ends = last_visible_offsets(cluster, topic, timeout, transactional)
    committed = committed_offsets(cluster, group, topic, timeout)
    return {p: (committed.get(p, 0), end, settled) for p, (end, settled) in ends.items()}


def group_lag(
    cluster: Cluster,
    group: str,
    topics_: list[str],
    transactional: frozenset[str] = frozenset(),
    timeout: float = 30.0,
) -> int:
    """Records the group still has to consume on topics_.

    Topics in `transactional` are written in transactions: their end is the last
    visible record, not the high watermark (which counts commit markers).
    """
    total = 0
    for topic in topics_:
        lag = partition_lag(cluster, group, topic, topic in transactional, timeout)
        for committed, end, settled in lag.values():
            total += max(0 if settled else 1, end - committed)
    return total
