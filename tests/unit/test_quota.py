"""Per-user quotas (command_service/quota.py): token-bucket arithmetic, the errors'
details, and one budget shared by several processes."""

from __future__ import annotations

import multiprocessing

import pytest

from command_service.quota import (
    BucketTable,
    Budget,
    Quotas,
    SharedTable,
    private_table,
)
from mysocial.config import Settings
from mysocial.errors import QuotaExceeded


def test_a_bucket_spends_refills_and_says_when_to_retry() -> None:
    table = private_table()
    budget = Budget(capacity=5, refill_per_s=1.0, name="writes")
    assert [table.take("ann", 1, budget, 100.0) for _ in range(5)] == [0.0] * 5
    assert table.take("ann", 1, budget, 100.0) == pytest.approx(1.0)
    assert table.take("ann", 3, budget, 100.5) == pytest.approx(2.5)  # 0.5 back, 3 needed
    assert table.take("ann", 1, budget, 101.0) == 0.0  # refused takes spent nothing
    assert table.take("bob", 5, budget, 101.0) == 0.0  # users do not share a bucket
    assert table.take("ann", 5, budget, 1000.0) == 0.0  # refills to capacity, no more
    assert table.take("ann", 1, budget, 1000.0) > 0


def test_a_full_table_gives_the_slot_of_a_refilled_bucket_to_a_new_user() -> None:
    table = private_table(slots_per_stripe=1)  # one slot per stripe: users collide
    budget = Budget(capacity=2, refill_per_s=1.0, name="writes")
    users = [f"u{i}" for i in range(200)]
    for user in users:
        assert table.take(user, 2, budget, 0.0) == 0.0  # each a fresh bucket
    # Collisions only ever err toward letting a user write (a refilled bucket).
    assert all(table.take(user, 2, budget, 10.0) == 0.0 for user in users)


def test_quota_exceeded_names_the_quota_and_the_delay() -> None:
    settings = Settings(quota_points=3, quota_refill_per_s=0.5, upload_quota=1)
    quotas = Quotas(settings, private_table())
    quotas.clock = lambda: 50.0
    quotas.charge("eve", "CreatePost")  # 3 points
    with pytest.raises(QuotaExceeded) as exc:
        quotas.charge("eve", "LikePost")
    assert exc.value.retry_after_s == pytest.approx(2.0)
    assert exc.value.subject == "user:eve/writes"
    assert exc.value.reason == "QUOTA_EXCEEDED"
    quotas.charge_upload("eve")  # uploads have a budget of their own
    with pytest.raises(QuotaExceeded) as upload:
        quotas.charge_upload("eve")
    assert upload.value.subject == "user:eve/uploads"
    assert upload.value.retry_after_s == pytest.approx(60.0)


def test_quotas_off() -> None:
    quotas = Quotas(Settings(quota_points=0, upload_quota=0), private_table())
    for _ in range(1000):
        quotas.charge("eve", "CreatePost")
        quotas.charge_upload("eve")


def _spend_all(shared: SharedTable, out: multiprocessing.Queue[int]) -> None:
    table, memory = shared.attach()
    budget = Budget(capacity=500, refill_per_s=0.0, name="writes")
    out.put(sum(1 for _ in range(400) if table.take("abuser", 1, budget, 0.0) == 0.0))
    del table
    memory.close()


def test_worker_processes_share_one_budget() -> None:
    shared, memory = SharedTable.create(slots_per_stripe=64)
    try:
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue[int] = ctx.Queue()
        procs = [ctx.Process(target=_spend_all, args=(shared, out)) for _ in range(3)]
        for p in procs:
            p.start()
        allowed = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        # 3 x 400 attempts against one budget of 500: exactly 500 pass, whoever got them.
        assert sum(allowed) == 500, allowed
        table = BucketTable(memory.buf, shared.locks)
        assert table.take("abuser", 1, Budget(500, 0.0, "writes"), 0.0) > 0
        del table
    finally:
        memory.close()
        memory.unlink()
