"""Restore: replaying topics into local state, a step at a time, from the main loop.

A task that owns state registers one Restoration per partition it must read back
(the counts' changelog from the local checkpoint, the trending candidates up to the
committed offset, ...). The reader assigns them all to one restore consumer and each
`step()` hands a bounded chunk of records to their owners, so the main loop keeps
polling the group between chunks (no long work inside a rebalance callback; the
default max.poll.interval.ms holds). Like Kafka Streams' StoreChangelogReader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from processor.errors import FatalProcessorError

STEP_RECORDS = 10_000
STEP_TIMEOUT_S = 0.05


@dataclass
class Restoration:
    """Read `topic`[`partition`] from `start` until `end`, handing records to `apply`.

    `end` is an offset the read must reach: the partition's high watermark when the
    restore is registered, for a changelog. A read_committed consumer reports the end
    of a partition at its last stable offset, which an open transaction of another
    (stopped) instance holds back while committed records follow it; stopping there
    would lose those (KAFKA-10167). So the restore waits until the end it reads is at
    least `end` (the open transaction resolved, by its owner or by its timeout)."""

    topic: str
    partition: int
    start: int
    end: int
    apply: Callable[[list[Message]], None]
    restored: int = 0
    next_offset: int = field(init=False)

    def __post_init__(self) -> None:
        self.next_offset = self.start

    @property
    def empty(self) -> bool:
        return self.end <= 0 or (self.start != OFFSET_BEGINNING and self.start >= self.end)


class ChangelogReader:
    """Replays registered partitions with one consumer; owners poll `done`."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.active_by_owner: dict[str, list[Restoration]] = {}
        self.restored_by_owner: dict[str, int] = {}

    def register(self, owner: str, restorations: list[Restoration]) -> None:
        todo = [r for r in restorations if not r.empty]
        self.active_by_owner[owner] = todo
        self.restored_by_owner[owner] = 0
        if todo:
            self._reassign()

    def cancel(self, owner: str) -> None:
        if self.active_by_owner.pop(owner, None):
            self._reassign()
        self.restored_by_owner.pop(owner, None)

    def active(self) -> bool:
        return any(self.active_by_owner.values())

    def done(self, owner: str) -> bool:
        return owner in self.active_by_owner and not self.active_by_owner[owner]

    def restored(self, owner: str) -> int:
        return self.restored_by_owner.get(owner, 0)

    def step(self) -> int:
        """Read one chunk; returns the records applied."""
        by_tp = {
            (r.topic, r.partition): (owner, r)
            for owner, rs in self.active_by_owner.items()
            for r in rs
        }
        batches: dict[tuple[str, int], list[Message]] = {}
        finished: set[tuple[str, int]] = set()
        for msg in self.consumer.consume(STEP_RECORDS, STEP_TIMEOUT_S):
            key = (msg.topic() or "", msg.partition() or 0)
            if key not in by_tp or key in finished:
                continue  # a partition cancelled or finished within this chunk
            end = by_tp[key][1].end
            offset = msg.offset() or 0
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise FatalProcessorError(f"restore of {key[0]}[{key[1]}]: {err}")
                if offset >= end:  # the visible end (past any commit marker) reached it
                    finished.add(key)
                continue
            if offset >= end:
                finished.add(key)
                continue
            batches.setdefault(key, []).append(msg)
            if offset + 1 >= end:
                finished.add(key)
        total = 0
        for key, msgs in batches.items():
            owner, r = by_tp[key]
            r.apply(msgs)
            r.restored += len(msgs)
            r.next_offset = (msgs[-1].offset() or 0) + 1
            self.restored_by_owner[owner] += len(msgs)
            total += len(msgs)
        if finished:
            for owner, rs in self.active_by_owner.items():
                self.active_by_owner[owner] = [
                    r for r in rs if (r.topic, r.partition) not in finished
                ]
            self._reassign()
        return total

    def _reassign(self) -> None:
        assignment = [
            TopicPartition(r.topic, r.partition, r.next_offset)
            for rs in self.active_by_owner.values()
            for r in rs
        ]
        if assignment:
            self.consumer.assign(assignment)
        else:
            self.consumer.unassign()
