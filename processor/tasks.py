"""Tasks: one projection on one input partition, with an explicit lifecycle.

As in Kafka Streams, a task is the unit of work and of ownership: the projection
`posts_with_counts` on partition p owns p of likes, comments and posts-by-id, its
changelog partition p and its local state; `posts_by_id` on p owns p of posts;
`trending_posts` on 0 owns the candidates partition. The group's assignment decides
which tasks this instance runs; the TaskManager turns assignments into tasks and
moves each through its states, checking every transition:

    CREATED ──> RESTORING ──> RUNNING ──> SUSPENDED ──> CLOSED
       └──────────┴────────────────────────> ↑   └──> RESTORING (assigned again)

CREATED → RESTORING happens in the main loop, not in the assignment callback: the
committed offsets are fetched (waiting for a previous owner's transaction to be
resolved) and the task's state replay is handed to the ChangelogReader, which the
loop steps while it keeps polling. Input partitions stay paused until RUNNING.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mysocial.log import get_logger
from processor.clients import group_id
from processor.errors import FatalProcessorError
from processor.hanging import open_offsets_transaction
from processor.projection import Context, Projection
from processor.restore import ChangelogReader

log = get_logger("processor.tasks")

# Fetching a new assignment's committed offsets: each attempt waits this long; a
# cluster that does not answer is asked again until processor_offsets_wait_ms.
COMMITTED_ATTEMPT_S = 10.0
_TRANSIENT = (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


class State(Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    SUSPENDED = "suspended"
    CLOSED = "closed"


_LEGAL = {
    State.CREATED: {State.RESTORING, State.SUSPENDED},
    State.RESTORING: {State.RUNNING, State.SUSPENDED},
    State.RUNNING: {State.SUSPENDED},
    State.SUSPENDED: {State.RESTORING, State.CLOSED},
    State.CLOSED: set[State](),
}


class IllegalTransition(RuntimeError):
    """A task was asked to move to a state its current state cannot lead to."""


@dataclass(eq=False)
class Task:
    """A projection's work on one partition number."""

    projection: Projection
    partition: int
    inputs: list[tuple[str, int]]  # (full topic name, partition) it consumes
    state: State = State.CREATED
    # Assigned (again) and not yet restoring: the main loop initializes it next.
    needs_init: bool = True

    @property
    def id(self) -> str:
        return f"{self.projection.name}/{self.partition}"

    def transition(self, new: State) -> None:
        if new not in _LEGAL[self.state]:
            raise IllegalTransition(f"task {self.id}: {self.state.value} -> {new.value}")
        self.state = new


@dataclass
class TaskManager:
    """Owns the tasks: creates them on assignment, restores, runs, suspends, closes."""

    projections: list[Projection]
    ctx: Context
    consumer: Consumer
    reader: ChangelogReader
    tasks: dict[tuple[str, int], Task] = field(default_factory=dict)
    restored_records: int = 0  # replayed for the tasks of the latest assignment
    assigned_at: float | None = None  # while some task of the latest assignment waits
    # Nothing to initialize or restore (the loop's common case: skip the scans).
    settled: bool = True
    # (every input of a live task, inputs of tasks not running), while unchanged.
    _partitions: tuple[set[tuple[str, int]], set[tuple[str, int]]] | None = None

    # -- from the rebalance callbacks (no blocking work here) -----------------------
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """New assignment: a task per projection and partition (a suspended task
        given back resumes through RESTORING); suspended ones not given back close."""
        owned = {(tp.topic, tp.partition) for tp in partitions}
        self.restored_records = 0
        self.assigned_at = time.monotonic()
        self.settled, self._partitions = False, None
        wanted = {
            (proj.name, p): [(t, p) for t in self._inputs(proj) if (t, p) in owned]
            for proj in self.projections
            for (topic, p) in owned
            if topic in self._inputs(proj)
        }
        for key, task in list(self.tasks.items()):
            if key not in wanted and task.state == State.SUSPENDED:
                self._close(task)
        for (name, p), inputs in wanted.items():
            existing = self.tasks.get((name, p))
            if existing is None:
                proj = next(x for x in self.projections if x.name == name)
                self.tasks[(name, p)] = Task(proj, p, inputs)
            else:
                existing.inputs = inputs
                existing.needs_init = True

    def revoke(self, partitions: Iterable[TopicPartition], lost: bool = False) -> None:
        """Suspend every task that loses an input partition (closed at once if lost,
        else when the next assignment does not give it back)."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.settled, self._partitions = False, None
        for task in list(self.tasks.values()):
            if task.state == State.CLOSED or not gone.intersection(task.inputs):
                continue
            if task.state != State.SUSPENDED:
                self._suspend(task)
            if lost:
                self._close(task)
        for key in gone:
            self.ctx.positions.pop(key, None)
            self.ctx.consumed.pop(key, None)

    # -- from the main loop --------------------------------------------------------
    def initialize_and_restore(self) -> list[Task]:
        """Move new tasks into RESTORING and restored ones into RUNNING; returns the
        tasks that started running."""
        if self.settled:
            return []
        self._partitions = None
        waiting = [t for t in self.tasks.values() if t.needs_init]
        started: list[Task] = []
        if waiting:
            committed = self._committed(waiting)
            for task in waiting:
                task.needs_init = False
                task.transition(State.RESTORING)
                restorations = task.projection.restorations(task.partition, committed)
                self.reader.register(task.id, restorations)
        if self.reader.active():
            self.reader.step()
        for task in self.tasks.values():
            if task.state == State.RESTORING and self.reader.done(task.id):
                task.transition(State.RUNNING)
                task.projection.start(task.partition)
                self.restored_records += self.reader.restored(task.id)
                started.append(task)
        if self.assigned_at is not None and not self.restoring():
            log.info(
                "partitions_assigned",  # every task of the assignment runs
                tasks=sorted(t.id for t in self.live()),
                restored_records=self.restored_records,
                restore_s=round(time.monotonic() - self.assigned_at, 3),
            )
            self.assigned_at = None
        self.settled = self.assigned_at is None and not self.restoring()
        return started

    def restoring(self) -> bool:
        return any(t.state != State.RUNNING for t in self.live())

    def partitions(self) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """Every input partition of a live task, and those that must stay paused
        because their task is not running yet."""
        if self._partitions is None:
            self._partitions = (
                {tp for t in self.live() for tp in t.inputs},
                {tp for t in self.live() if t.state != State.RUNNING for tp in t.inputs},
            )
        return self._partitions

    def live(self) -> Iterator[Task]:
        return (t for t in self.tasks.values() if t.state != State.CLOSED)

    def running(self, projection: Projection) -> list[int]:
        return sorted(
            t.partition
            for t in self.tasks.values()
            if t.projection is projection and t.state == State.RUNNING
        )

    def close_all(self) -> None:
        for task in list(self.tasks.values()):
            if task.state not in (State.SUSPENDED, State.CLOSED):
                self._suspend(task)
            if task.state == State.SUSPENDED:
                self._close(task)

    # -- internals ------------------------------------------------------------------
    def _inputs(self, proj: Projection) -> list[str]:
        return [self.ctx.settings.topic(name) for name in proj.sources]

    def _committed(self, tasks: list[Task]) -> dict[tuple[str, int], int]:
        """The group's committed offsets of these tasks' inputs, fetched with
        require_stable (read_committed): this waits until a previous owner's
        transaction carrying offsets is resolved, so the changelog replayed next
        matches the offsets the task resumes from."""
        tps = [TopicPartition(t, p) for task in tasks for (t, p) in task.inputs]
        out: dict[tuple[str, int], int] = {}
        for tp in self._fetch_committed(tps):
            out[(tp.topic, tp.partition)] = max(tp.offset, 0)
            self.ctx.consumed[(tp.topic, tp.partition)] = max(tp.offset, 0)
        return out

    def _fetch_committed(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        """consumer.committed(), asked again while the cluster does not answer (a
        request caught by a stalled broker is not retried by librdkafka once the broker
        resumes); after processor_offsets_wait_ms, or on another error, the instance
        stops, naming a transaction that blocks the offsets if there is one."""
        settings = self.ctx.settings
        give_up = time.monotonic() + settings.processor_offsets_wait_ms / 1000.0
        attempt = min(COMMITTED_ATTEMPT_S, settings.processor_offsets_wait_ms / 1000.0)
        while True:
            try:
                return list(self.consumer.committed(tps, timeout=attempt))
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not (err.retriable() or err.code() in _TRANSIENT):
                    raise
                if time.monotonic() > give_up:
                    blocked = open_offsets_transaction(settings, group_id(settings))
                    if blocked is not None:
                        raise FatalProcessorError(blocked.describe()) from exc
                    raise
                log.warning("committed_offsets_retry", error=str(err))

    def _suspend(self, task: Task) -> None:
        self.reader.cancel(task.id)
        task.needs_init = False
        task.transition(State.SUSPENDED)
        task.projection.suspend(task.partition)

    def _close(self, task: Task) -> None:
        self._partitions = None
        task.transition(State.CLOSED)
        task.projection.close(task.partition)
        del self.tasks[(task.projection.name, task.partition)]


def owned_only(consumer: Consumer, msgs: list[Message]) -> list[Message]:
    """The records of msgs whose partitions this instance still owns, after a rebalance
    ran inside the consume calls that returned them.

    The batch may hold records of partitions revoked in between
    (confluent-kafka-python#1013). Those are dropped before they could move this
    instance's positions: otherwise its next commit would write offsets for partitions
    another instance owns now. Records of partitions revoked and given back are read
    again from the committed offset; that leaves the same state as reading them once
    (test_records_read_again_after_a_rebalance_change_nothing).
    """
    owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
    # Error events stay: the fatal one that fenced this instance comes with the very
    # rebalance (partitions lost) that made this filter run.
    kept = [m for m in msgs if m.error() is not None or (m.topic(), m.partition()) in owned]
    if len(kept) != len(msgs):
        log.info("records_of_revoked_partitions_dropped", records=len(msgs) - len(kept))
    return kept
