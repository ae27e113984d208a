"""The engine's pure parts: the task lifecycle, the task manager's bookkeeping on
assignments and revocations, and how transactional errors are classified."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from mysocial.config import Settings
from processor.checkpoint import ATTEMPT_S, Abortable, ErrorClass, call, classify
from processor.errors import FatalProcessorError
from processor.projection import Context, Projection
from processor.tasks import IllegalTransition, State, Task, TaskManager


class Recorder(Projection):
    def __init__(self, name: str, sources: tuple[str, ...]) -> None:
        self.name = name
        self.sources = sources
        self.calls: list[str] = []

    def start(self, partition: int) -> None:
        self.calls.append(f"start {partition}")

    def suspend(self, partition: int) -> None:
        self.calls.append(f"suspend {partition}")

    def close(self, partition: int) -> None:
        self.calls.append(f"close {partition}")


class NoRestores:
    """The ChangelogReader as the manager sees it when no task registered anything."""

    def cancel(self, owner: str) -> None:
        pass


def test_the_lifecycle_allows_only_its_transitions() -> None:
    task = Task(Recorder("p", ("likes",)), 0, [("likes", 0)])
    for state in (State.RESTORING, State.RUNNING, State.SUSPENDED, State.RESTORING):
        task.transition(state)
    task.transition(State.RUNNING)
    with pytest.raises(IllegalTransition, match="running -> closed"):
        task.transition(State.CLOSED)  # a running task is suspended (committed) first
    task.transition(State.SUSPENDED)
    task.transition(State.CLOSED)
    for state in State:
        with pytest.raises(IllegalTransition):
            task.transition(state)
    with pytest.raises(IllegalTransition, match="created -> running"):
        Task(Recorder("p", ()), 1, []).transition(State.RUNNING)  # never without restore


def _manager(*projections: Projection) -> TaskManager:
    ctx = Context(Settings(), cast(Any, None), cast(Any, None), lambda: 0.0, lambda t, p: (0, 0))
    return TaskManager(list(projections), ctx, cast(Any, None), cast(Any, NoRestores()))


def test_tasks_follow_the_assignment_of_their_inputs() -> None:
    counts = Recorder("counts", ("likes", "comments"))
    rekey = Recorder("rekey", ("posts",))
    tm = _manager(counts, rekey)
    tm.ctx.positions[("likes", 1)] = 7
    tm.assign(
        [TopicPartition("likes", 1), TopicPartition("comments", 1), TopicPartition("posts", 3)]
    )
    assert {(t.id, t.state) for t in tm.live()} == {
        ("counts/1", State.CREATED),
        ("rekey/3", State.CREATED),
    }
    assert tm.tasks[("counts", 1)].inputs == [("likes", 1), ("comments", 1)]
    assert tm.partitions()[1] == {("likes", 1), ("comments", 1), ("posts", 3)}  # none runs
    # Eager rebalance: everything is revoked, then part of it given back.
    tm.revoke(
        [TopicPartition("likes", 1), TopicPartition("comments", 1), TopicPartition("posts", 3)]
    )
    assert {t.state for t in tm.live()} == {State.SUSPENDED}
    assert tm.ctx.positions == {}  # no offsets of revoked partitions may be committed
    tm.assign([TopicPartition("likes", 1), TopicPartition("comments", 1)])
    assert [t.id for t in tm.live()] == ["counts/1"]
    assert tm.tasks[("counts", 1)].needs_init  # given back: restores (from its checkpoint)
    assert rekey.calls == ["suspend 3", "close 3"]
    assert counts.calls == ["suspend 1"]


def test_lost_partitions_close_their_tasks_at_once() -> None:
    counts = Recorder("counts", ("likes",))
    tm = _manager(counts)
    tm.assign([TopicPartition("likes", 0), TopicPartition("likes", 2)])
    tm.revoke([TopicPartition("likes", 2)], lost=True)
    assert [t.id for t in tm.live()] == ["counts/0"]
    assert counts.calls == ["suspend 2", "close 2"]
    tm.close_all()
    assert list(tm.live()) == []


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (KafkaError(KafkaError._FENCED), ErrorClass.FATAL),
        (KafkaError(KafkaError.PRODUCER_FENCED), ErrorClass.FATAL),
        (KafkaError(KafkaError._FATAL), ErrorClass.FATAL),  # the error event of a fatal client
        (KafkaError(KafkaError._STATE, fatal=True), ErrorClass.FATAL),
        (
            KafkaError(KafkaError.CONCURRENT_TRANSACTIONS, txn_requires_abort=True),
            ErrorClass.ABORTABLE,
        ),
        (KafkaError(KafkaError._TIMED_OUT, retriable=True), ErrorClass.RETRIABLE),
        (KafkaError(KafkaError.INVALID_CONFIG), ErrorClass.FATAL),  # unknown: stop, say why
    ],
)
def test_transactional_errors_are_classified(err: KafkaError, kind: ErrorClass) -> None:
    assert classify(err) == kind


def test_call_retries_what_is_retriable_and_raises_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("processor.checkpoint.time.sleep", lambda s: None)
    attempts = iter([KafkaError(KafkaError._TIMED_OUT, retriable=True)] * 2 + [None])
    timeouts: list[float] = []

    def flaky(timeout: float) -> str:
        timeouts.append(timeout)
        err = next(attempts)
        if err is not None:
            raise KafkaException(err)
        return "ok"

    assert call("flaky", flaky, time.monotonic() + 60) == "ok"
    assert len(timeouts) == 3 and max(timeouts) <= ATTEMPT_S  # no attempt blocks long

    def abortable(timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE, txn_requires_abort=True))

    with pytest.raises(Abortable):
        call("abortable", abortable, time.monotonic() + 60)

    def always_retriable(timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))

    with pytest.raises(FatalProcessorError, match=r"always_retriable.*until its deadline"):
        call("always_retriable", always_retriable, time.monotonic() + 0.05)


def test_an_error_raised_inside_a_delivery_callback_is_classified_too() -> None:
    """confluent-kafka reports a KafkaException raised while it ran a delivery callback
    as a SystemError caused by it (seen when a fenced producer flushed)."""

    def flush(timeout: float) -> None:
        try:
            raise KafkaException(KafkaError(KafkaError._FENCED))
        except KafkaException as exc:
            raise SystemError("callback returned a result with an exception set") from exc

    with pytest.raises(FatalProcessorError, match="_FENCED"):
        call("flush", flush, time.monotonic() + 60)

    def unrelated(timeout: float) -> None:
        raise SystemError("not Kafka's")

    with pytest.raises(SystemError):
        call("unrelated", unrelated, time.monotonic() + 60)
