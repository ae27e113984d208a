"""Holding a refusal over quota when its client did not wait as told.

Why: a client that ignores RetryInfo and sends its next call as soon as the last one is
answered (a script in a loop, a bot, a retry loop without backoff) sends as many calls
as the service can refuse. Each refusal is cheap, but not free: measured, 500 refused
calls a second cost the command service 0.42-0.46 cores, mostly grpc's own per-call
work, taken from the broker and every other user on a shared machine (bench/NOTES.md,
"what one refused call costs").

The rule: a user's first refusal is answered at once, with RetryInfo saying when its
points are back. A refusal for a call that arrives before then is held until the
points are back (at most `MYSOCIAL_QUOTA_HOLD_S`, and within the call's deadline),
then answered with RetryInfo for what is left of the wait. A client that honours
RetryInfo loses nothing: it learns from the first refusal at once, and the calls it had
already sent would have been refused anyway. One that does not back off is slowed to
about one call per call it keeps open per hold, and each costs the service an idle
timer. An abuser that opens calls without waiting for answers is not slowed; what
bounds it is a worker's cap on held calls (answered at once past it) and, at the edge,
a per-client limit in front of the service.

Each worker keeps its own record: a client's channel stays on one worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NoReturn

from prometheus_client import Gauge

from mysocial.errors import QuotaExceeded

MAX_HELD = 1000  # refusals one worker holds at once; past it they are answered at once
MAX_USERS = 10_000  # users' quotas whose retry time a worker remembers (the most recent)
MIN_RETRY_S = 0.001  # RetryInfo counts in ms: the least delay it can say

HELD = Gauge(
    "mysocial_command_quota_held_refusals",
    "Refusals over quota the workers hold now, for calls sent before the RetryInfo time "
    "their user was given (each answered when the points are back).",
    multiprocess_mode="livesum",
)


class QuotaHold:
    """When each recently refused user was told its points are back, in one worker."""

    def __init__(
        self,
        hold_s: float,
        max_held: int = MAX_HELD,
        max_users: int = MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hold_s = hold_s
        self.max_held = max_held
        self.max_users = max_users
        self.clock = clock
        self.held = 0
        self._retry_at: dict[str, float] = {}  # quota subject -> when its points are back

    def delay_for(self, refusal: QuotaExceeded, time_left_s: float) -> float:
        """How long to hold this refusal: 0 unless the call came before the retry time
        an earlier refusal gave (or when the worker already holds its share); else
        until the points are back, within the hold and the call's deadline."""
        now = self.clock()
        quota = refusal.subject  # a user's writes, or its uploads
        told = self._retry_at.pop(quota, 0.0)  # and put back last: the most recent stay
        self._retry_at[quota] = max(told, now + refusal.retry_after_s)
        if len(self._retry_at) > self.max_users:
            del self._retry_at[next(iter(self._retry_at))]
        if now >= told or self.held >= self.max_held:
            return 0.0
        return max(0.0, min(self.hold_s, refusal.retry_after_s, time_left_s))

    async def refuse(self, refusal: QuotaExceeded, time_left_s: float) -> NoReturn:
        """Raise the refusal, after holding it if the user did not wait as told."""
        delay = self.delay_for(refusal, time_left_s)
        if delay > 0:
            self.held += 1
            HELD.inc()
            try:
                await asyncio.sleep(delay)
            finally:
                self.held -= 1
                HELD.dec()
            refusal.retry_after_s = max(MIN_RETRY_S, round(refusal.retry_after_s - delay, 3))
        raise refusal
