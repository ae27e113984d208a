"""Per-user write quotas: token buckets that hold across the service's worker processes.

Why: one account (a script, a stolen token) must not spend the capacity every user
shares. Each user has a budget of points that refills at a steady rate; a command
costs points by what it makes the system do, as Bluesky's per-action points do
(create 3, update 2, delete 1): CreatePost 3, AddComment 2, every other command 1.
The defaults (MYSOCIAL_QUOTA_POINTS 300, refilled at 1 point/s) follow Mastodon's
300 API calls per 5 minutes per account: a burst of 300 likes, then about one a
second, far beyond what a person taps and well under what a script sends. Uploads have
a budget of their own (MYSOCIAL_UPLOAD_QUOTA uploads, one back every
MYSOCIAL_UPLOAD_REFILL_S; Mastodon: 30 media uploads per 30 minutes), since one
costs the image pipeline far more than a like.

Past the quota a command fails RESOURCE_EXHAUSTED at once, with RetryInfo (when
enough points are back) and QuotaFailure, before anything is validated or written.

How the budget holds across workers: gRPC spreads connections over the workers
(SO_REUSEPORT), and one client's channel stays on one worker, so per-worker buckets
would give a user with N channels N budgets. The parent process creates one table in
shared memory (multiprocessing.shared_memory) before it starts the workers; every
worker updates it under one of STRIPES locks (each lock owns its own slice of the
table, so a user's bucket is always under the same lock). A slot holds a user's
64-bit hash, tokens and the time they were counted. A user not found takes a slot
whose bucket has refilled to full (the same as having no bucket), else the fullest
one in reach: a table overflowing with active users errs toward letting them write.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import struct
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

from mysocial.config import Settings
from mysocial.errors import QuotaExceeded

COSTS = {"CreatePost": 3, "AddComment": 2}  # every other command: 1
SLOT = struct.Struct("<Qdd")  # user hash, tokens, when counted (time.monotonic())
STRIPES = 16
PROBES = 8


def _hash(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "little") or 1


@dataclass(frozen=True)
class Budget:
    """A bucket's terms: capacity in points, points back per second."""

    capacity: float
    refill_per_s: float
    name: str  # in QuotaFailure's subject and the error's reason


class BucketTable:
    """Token buckets in a buffer (shared memory across workers, or private), each
    stripe of slots guarded by its own lock."""

    def __init__(self, buf: Any, locks: list[AbstractContextManager[Any]]) -> None:
        self.buf = buf
        self.locks = locks
        self.per_stripe = len(buf) // SLOT.size // len(locks)

    def take(self, user: str, cost: float, budget: Budget, now: float) -> float:
        """Spend cost points of the bucket of user (any key: Quotas uses budget/user): 0.0
        when allowed, else the seconds until
        enough points are back (nothing is spent then)."""
        h = _hash(user)
        stripe = h % len(self.locks)
        base = stripe * self.per_stripe
        with self.locks[stripe]:
            at, tokens = self._find(h, base, budget, now)
            if tokens >= cost:
                SLOT.pack_into(self.buf, at, h, tokens - cost, now)
                return 0.0
            SLOT.pack_into(self.buf, at, h, tokens, now)
            return (cost - tokens) / budget.refill_per_s if budget.refill_per_s > 0 else 3600.0

    def _find(self, h: int, base: int, budget: Budget, now: float) -> tuple[int, float]:
        """(byte offset of h's slot, its tokens refilled to now)."""
        fullest, fullest_level = -1, -1.0
        start = h // len(self.locks)
        for i in range(PROBES):
            at = (base + (start + i) % self.per_stripe) * SLOT.size
            key, tokens, counted = SLOT.unpack_from(self.buf, at)
            level = min(budget.capacity, tokens + max(0.0, now - counted) * budget.refill_per_s)
            if key == h:
                return at, level
            if key == 0:
                level = budget.capacity
            if level > fullest_level:
                fullest, fullest_level = at, level
        # Not found: the slot whose bucket is fullest (a full one is as good as empty).
        return fullest, budget.capacity


class Quotas:
    """The command service's budgets: writes and uploads, per user."""

    def __init__(self, settings: Settings, table: BucketTable | None) -> None:
        self.table = table
        self.writes = Budget(settings.quota_points, settings.quota_refill_per_s, "writes")
        self.uploads = Budget(
            settings.upload_quota,
            1.0 / settings.upload_refill_s if settings.upload_refill_s else 0.0,
            "uploads",
        )
        self.clock = time.monotonic

    def charge(self, user: str, method: str) -> None:
        """Spend a command's points; QuotaExceeded when the user has too few left."""
        if self.table is None or self.writes.capacity <= 0:
            return
        self._spend(user, COSTS.get(method, 1), self.writes)

    def charge_upload(self, user: str) -> None:
        if self.table is None or self.uploads.capacity <= 0:
            return
        self._spend(user, 1, self.uploads)

    def _spend(self, user: str, cost: float, budget: Budget) -> None:
        assert self.table is not None
        wait = self.table.take(f"{budget.name}/{user}", cost, budget, self.clock())
        if wait > 0:
            every = 1 / budget.refill_per_s if budget.refill_per_s else 0
            raise QuotaExceeded(
                f"{budget.name} quota of user {user} used up: {budget.capacity:g} "
                f"{'points' if budget.name == 'writes' else 'uploads'}, one back every "
                f"{every:g} s; retry after the delay in RetryInfo",
                subject=f"user:{user}/{budget.name}",
                description=f"{budget.capacity:g} per burst, {budget.refill_per_s:g} per second",
                reason="QUOTA_EXCEEDED",
                retry_after_s=math.ceil(wait * 1000) / 1000,  # RetryInfo counts in ms
            )


@dataclass
class SharedTable:
    """What a parent hands its workers: the shared memory's name and the locks."""

    name: str
    locks: list[Any]

    @classmethod
    def create(cls, slots_per_stripe: int = 4096) -> tuple[SharedTable, shared_memory.SharedMemory]:
        """A zeroed table in shared memory (the parent keeps the second value to unlink)."""
        memory = shared_memory.SharedMemory(
            create=True, size=SLOT.size * slots_per_stripe * STRIPES
        )
        locks = [multiprocessing.get_context("spawn").Lock() for _ in range(STRIPES)]
        return cls(memory.name, locks), memory

    def attach(self) -> tuple[BucketTable, shared_memory.SharedMemory]:
        """In a worker: the table over the parent's memory (keep the second value)."""
        memory = shared_memory.SharedMemory(name=self.name)
        return BucketTable(memory.buf, self.locks), memory


class _NoLock(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None


def private_table(slots_per_stripe: int = 4096) -> BucketTable:
    """One worker alone (no other process shares its users): a table of its own."""
    return BucketTable(
        bytearray(SLOT.size * slots_per_stripe * STRIPES), [_NoLock() for _ in range(STRIPES)]
    )
