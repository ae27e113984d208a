"""The compiled core (processor_native) against the Python reference (PyCore over
processor/rules.py): same records in, same records, outputs, changelogs, dead letters
and counters out, through commits, aborts and restarts, over random workloads; and the
native decoder fuzzed against Python's checks. No Kafka: the harness is in
tests/support/native.py. The seam between the two (codes, stats) is tested in
test_native_seam.py."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from mysocial.events import InvalidEvent, check
from mysocial.kafka.partitioning import murmur2
from processor import core as core_mod
from processor.core import CoreStats, make_core
from processor.trending import TrendingConfig
from tests.support.native import (
    CFG,
    CONTRACT,
    EQUAL,
    PARTITIONS,
    ROUTES,
    Run,
    drive,
    workload,
)

processor_native = pytest.importorskip("processor_native")


@pytest.mark.parametrize(
    ("seed", "cfg"), [(seed, CFG) for seed in range(40)] + [(seed, EQUAL) for seed in range(10)]
)
def test_native_core_equals_the_python_reference(seed: int, cfg: TrendingConfig) -> None:
    py, native = drive(seed, cfg=cfg)
    assert native.dead == py.dead
    assert len(native.changes) == len(py.changes)
    for changes, expected in zip(native.changes, py.changes, strict=True):
        assert changes == expected
    # The records carry their events' traces (the workload gives most events one).
    traced = [traces for c in py.changes for *_, traces in c if traces[0]]
    assert traced and any(parents for _, parents in traced)
    assert all(len(ids) <= 16 for ids, _ in traced)
    assert native.comments == py.comments
    for changelog, expected_log in zip(native.changelog, py.changelog, strict=True):
        assert changelog == expected_log
    assert native.snapshot() == py.snapshot()
    for p in range(PARTITIONS):
        # store_reads differ by design: the native core skips keys it knows are absent.
        assert native.core.stats(p)._replace(store_reads=0) == py.core.stats(p)._replace(
            store_reads=0
        )


def test_the_workload_exercises_every_path() -> None:
    """Guard against a generator that stopped producing the interesting cases."""
    runs = [drive(seed) for seed in range(4)]
    reasons = " ".join(r for py, _ in runs for _, r in py.dead)
    for expected in ("undecodable", "malformed", "misrouted", "missing event_id"):
        assert expected in reasons
    py, native = runs[3]
    records = [c[4] for commit in py.comments for c in commit]
    assert any(r is None for r in records) and any(r is not None and r.text for r in records)
    for run in (py, native):
        totals = CoreStats._make(
            sum(column)
            for column in zip(*(run.core.stats(p) for p in range(PARTITIONS)), strict=True)
        )
        assert all(totals), totals  # every counter counted something


@pytest.mark.parametrize("seed", range(5))
def test_full_pending_queues_dead_letter_alike(seed: int) -> None:
    py, native = drive(seed, max_pending=2)
    assert any("events wait for post" in r for _, r in py.dead)
    assert native.dead == py.dead
    assert native.snapshot() == py.snapshot()


def test_records_are_encoded_byte_for_byte_as_python_protobuf_does() -> None:
    """Not needed for correctness (both parse the same), but it means the native
    encoder follows protobuf's field order and presence rules exactly."""
    py, native = drive(11)
    for p in range(PARTITIONS):
        a, b = native.stores[p].data, py.stores[p].data
        assert a.keys() == b.keys()
        for key in a:
            if key[:1] != b"Q":  # pending events keep the record's own encoding
                assert a[key] == b[key], key
    assert any(native.comment_values)  # post_comments values too
    assert native.comment_values == py.comment_values


def test_revoked_partitions_are_skipped_but_invalid_records_still_dead_lettered() -> None:
    msgs = workload(5, n=300)
    runs = (Run("python", 100_000), Run("native", 100_000))
    for run in runs:
        for p in (1, 3):
            run.core.remove_task(p)
        run.process(msgs, owned={0, 2})
        run.commit(random.Random(0), partitions=(0, 2))
    py, native = runs
    assert native.dead == py.dead and py.dead
    assert native.changes == py.changes
    assert {post_id for c in py.changes for post_id, _, _, _ in c}
    assert native.positions == py.positions


# -- the decoder and the checks, on their own -------------------------------------------------


def _mutations(raw: bytes, rng: random.Random) -> Iterator[bytes]:
    yield raw
    for _ in range(30):
        b = bytearray(raw)
        roll = rng.random()
        if roll < 0.4 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif roll < 0.6 and b:
            del b[rng.randrange(len(b)) :]
        elif roll < 0.8:
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            b += raw
        yield bytes(b)


@pytest.mark.parametrize("seed", range(10))
def test_what_the_native_check_accepts_python_accepts_alike(seed: int) -> None:
    """Fuzzed records: wherever the native decoder decides, Python's protobuf and
    events.check agree on validity and on every field read (elsewhere it defers)."""
    rng = random.Random(seed)
    core = make_core("native", ROUTES, PARTITIONS, CFG)
    assert isinstance(core, core_mod.NativeCore)
    decided = 0
    for msg in workload(seed, n=150):
        contract = CONTRACT[msg.topic()]
        for value in _mutations(msg.value() or b"", rng):
            native = core._core.check(ROUTES[msg.topic()], msg.key(), value, msg.partition())
            if native is None:
                continue
            decided += 1
            try:
                checked = check(contract, msg.key(), value, msg.partition(), PARTITIONS)
            except InvalidEvent as exc:
                pytest.fail(f"native accepted what Python rejects ({exc}): {value!r}")
            payload = getattr(checked.event, checked.kind)
            comment_id = getattr(payload, "comment_id", "")
            assert native == (checked.kind, checked.post_id, checked.actor, comment_id)
    assert decided > 100


def test_murmur2_equals_the_python_partitioner() -> None:
    rng = random.Random(2)
    for n in range(200):
        data = bytes(rng.randrange(256) for _ in range(n % 70))
        assert processor_native.murmur2(data) == murmur2(data)


def test_both_cores_keep_the_same_number_of_traces() -> None:
    import processor_native

    from mysocial import trace

    assert processor_native.MAX_TRACES == trace.MAX_TRACES
