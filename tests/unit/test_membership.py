"""Membership: when a member without an assignment counts as stuck."""

from __future__ import annotations

import json

import pytest

from processor.errors import FatalProcessorError
from processor.membership import Membership, join_deadline_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_is_three_session_timeouts_and_at_least_a_minute() -> None:
    assert join_deadline_s(6_000) == 60.0
    assert join_deadline_s(45_000) == 135.0


def test_waiting_counts_from_the_start_and_from_each_loss_not_from_each_revoke() -> None:
    clock = Clock()
    group = Membership(60.0, clock)
    clock.now += 50.0  # starting the transactions took long
    group.subscribed()
    clock.now += 60.0
    group.check()  # at the limit, not past it
    group.assigned()
    clock.now += 500.0
    group.check()  # assigned: never stuck however long
    group.unassigned()
    clock.now += 30.0
    group.unassigned()  # a lost after a revoke does not restart the wait
    clock.now += 31.0
    with pytest.raises(FatalProcessorError, match=r"for 61 s \(limit 60 s\); consumer group state"):
        group.check()


def test_the_error_names_the_group_state_librdkafka_reported() -> None:
    clock = Clock()
    group = Membership(60.0, clock)
    with pytest.raises(FatalProcessorError, match="not reported yet"):
        clock.now += 61.0
        group.check()
    stats = {"cgrp": {"state": "up", "join_state": "wait-join", "rebalance_cnt": 2}, "x": 1}
    group.on_stats(json.dumps(stats))
    assert group.group_state == {"state": "up", "join_state": "wait-join", "rebalance_cnt": 2}
    with pytest.raises(FatalProcessorError, match="'join_state': 'wait-join'"):
        group.check()
    group.on_stats(json.dumps({"name": "no group"}))  # a consumer without a group yet
    assert group.group_state == {}
