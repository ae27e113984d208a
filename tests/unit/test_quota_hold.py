"""Refusals over quota held when the client did not wait as told
(command_service/quota_hold.py): which are held, how long, what RetryInfo says
afterwards, and the caps on held calls and remembered users."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from command_service.quota_hold import MIN_RETRY_S, QuotaHold
from mysocial.errors import QuotaExceeded


def refusal(retry_after_s: float, user: str = "eve", quota: str = "writes") -> QuotaExceeded:
    return QuotaExceeded(
        f"{quota} quota of user {user} used up",
        subject=f"user:{user}/{quota}",
        description="300 per burst, 1 per second",
        reason="QUOTA_EXCEEDED",
        retry_after_s=retry_after_s,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_refusal_is_answered_at_once_and_calls_before_its_retry_time_are_held() -> None:
    clock = Clock()
    hold = QuotaHold(hold_s=1.0, clock=clock)
    assert hold.delay_for(refusal(0.8), time_left_s=30.0) == 0.0  # told: back at 100.8
    clock.now = 100.1
    assert hold.delay_for(refusal(0.7), 30.0) == 0.7  # did not wait: held until then
    assert hold.delay_for(refusal(2.5, quota="uploads"), 30.0) == 0.0  # another quota
    assert hold.delay_for(refusal(0.7, user="bob"), 30.0) == 0.0  # another user
    clock.now = 100.8
    assert hold.delay_for(refusal(1.0), 30.0) == 0.0  # waited as told: at once again
    clock.now = 100.9
    assert hold.delay_for(refusal(2.5), 30.0) == 1.0  # within the hold's bound
    assert hold.delay_for(refusal(2.5), 0.2) == 0.2  # and the call's deadline
    assert hold.delay_for(refusal(2.5), 0.0) == 0.0


def test_a_hold_of_zero_never_holds() -> None:
    clock = Clock()
    hold = QuotaHold(hold_s=0.0, clock=clock)
    assert [hold.delay_for(refusal(1.0), 30.0) for _ in range(3)] == [0.0] * 3


def test_retry_info_says_what_is_left_of_the_wait() -> None:
    hold = QuotaHold(hold_s=0.02)
    with pytest.raises(QuotaExceeded) as first:
        asyncio.run(hold.refuse(refusal(0.5), time_left_s=30.0))
    assert first.value.retry_after_s == 0.5  # answered at once, as the quota said
    with pytest.raises(QuotaExceeded) as held:
        asyncio.run(hold.refuse(refusal(0.5), time_left_s=30.0))
    assert held.value.retry_after_s == pytest.approx(0.48)
    assert held.value.subject == "user:eve/writes"  # the same refusal, QuotaFailure kept
    other = QuotaHold(hold_s=1.0)
    for _ in range(2):
        with pytest.raises(QuotaExceeded) as whole:
            asyncio.run(other.refuse(refusal(0.01), time_left_s=30.0))
    assert whole.value.retry_after_s == MIN_RETRY_S  # held the whole wait: retry now
    assert hold.held == other.held == 0


def test_past_its_cap_a_worker_answers_refusals_at_once() -> None:
    hold = QuotaHold(hold_s=5.0, max_held=2)

    async def scenario() -> tuple[int, float]:
        with pytest.raises(QuotaExceeded):
            await hold.refuse(refusal(3.0), 30.0)  # the first: told to wait 3 s
        first = asyncio.ensure_future(hold.refuse(refusal(3.0), 30.0))
        second = asyncio.ensure_future(hold.refuse(refusal(3.0), 30.0))
        await asyncio.sleep(0)  # both are now held
        held = hold.held
        gauge = REGISTRY.get_sample_value("mysocial_command_quota_held_refusals")
        assert gauge == 2  # what operators see (no other hold is open in this process)
        with pytest.raises(QuotaExceeded) as third:
            await hold.refuse(refusal(3.0), 30.0)  # raised without waiting
        for task in (first, second):  # a cancelled call (client gone) frees its place
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        return held, third.value.retry_after_s

    held, retry_after = asyncio.run(scenario())
    assert held == 2 and retry_after == 3.0
    assert hold.held == 0


def test_a_worker_remembers_the_most_recent_users_only() -> None:
    clock = Clock()
    hold = QuotaHold(hold_s=1.0, max_users=2, clock=clock)
    for user in ("ann", "bob", "cy"):  # ann is forgotten when cy arrives
        hold.delay_for(refusal(5.0, user=user), 30.0)
    assert hold.delay_for(refusal(5.0, user="cy"), 30.0) == 1.0
    assert hold.delay_for(refusal(5.0, user="ann"), 30.0) == 0.0  # a first refusal again
