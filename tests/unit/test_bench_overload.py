"""T6's abuser figure (bench/overload.py): windows alone and beside the abuser are
interleaved so that drift falls on both sides, and each side's p99 is taken over its
windows pooled, so that one window's tail does not decide the figure."""

from __future__ import annotations

import pytest

from bench.overload import Window, beside_abuser, pooled_p99


def test_windows_alternate_in_pairs_of_one_of_each() -> None:
    order = [beside_abuser(i) for i in range(8)]
    assert order == [False, True, True, False, False, True, True, False]
    assert all(order[j] != order[j + 1] for j in range(0, 8, 2))


def _window(beside: bool, slow: int, slow_ms: float = 100.0) -> Window:
    """100 calls, `slow` of them taking slow_ms and the rest 10 ms."""
    return Window(beside, [10.0] * (100 - slow) + [slow_ms] * slow, {})


def test_one_windows_tail_does_not_decide_the_pooled_p99() -> None:
    # The second beside window has a tail of 2 slow calls: alone it is that window's
    # p99 (ratio 10), pooled over 400 calls a side it is not.
    windows = [_window(beside_abuser(i), 2 if i == 2 else 0) for i in range(8)]
    out = pooled_p99(windows)
    assert out["pairs"] == 4
    assert out["p99_alone_ms"] == out["p99_with_abuser_ms"] == 10.0
    assert out["p99_ratio"] == 1.0
    assert out["pair_ratios"] == [1.0, 10.0, 1.0, 1.0]


def test_a_tail_in_every_window_beside_the_abuser_shows() -> None:
    windows = [_window(beside_abuser(i), 2 if beside_abuser(i) else 0) for i in range(4)]
    windows[1].errors = {"NOT_FOUND": 1}
    out = pooled_p99(windows)
    assert out["p99_ratio"] == pytest.approx(10.0)
    assert out["pair_ratios"] == [10.0, 10.0]
    assert out["ordinary_errors_with_abuser"] == {"NOT_FOUND": 1}
    assert [w["calls"] for w in out["windows"]] == [100] * 4
