"""`python -m bench` fails when a peer's counts differ from the backlog's truth: a ratio
to a peer that computed something else would be reported as if it meant something."""

from __future__ import annotations

from typing import Any

from bench.peers.common import miscounted_peers


def _peer(correct: bool = True, mismatches: int = 0) -> dict[str, Any]:
    return {"correct": correct, "mismatches": mismatches, "posts_checked": 100}


def _latency(missing: int = 0, warmup_missing: int = 0) -> dict[str, Any]:
    return {**_peer(), "latency": {"missing": missing, "warmup": {"missing": warmup_missing}}}


def test_peers_that_counted_right_or_did_not_run_pass() -> None:
    assert miscounted_peers({"T2": {}, "B3": {}}) == []  # --no-peers
    catchup = {"P1": _peer(), "P2": _peer(), "P3": _peer(), "P3_latency": _latency()}
    assert miscounted_peers(catchup) == []


def test_a_wrong_count_a_mismatch_or_a_lost_like_is_named() -> None:
    assert miscounted_peers({"P1": _peer(correct=False, mismatches=3)}) == ["P1"]
    assert miscounted_peers({"P2": _peer(mismatches=1)}) == ["P2"]  # disagreeing fields
    assert miscounted_peers({"P3": {"mismatches": 0}}) == ["P3"]  # never checked
    assert miscounted_peers({"P3_latency": _latency(missing=2)}) == ["P3_latency window"]
    assert miscounted_peers({"P3_latency": _latency(warmup_missing=1)}) == ["P3_latency window"]
