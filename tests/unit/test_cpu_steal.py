"""The benchmark's reading of stolen CPU time (bench/harness.py)."""

from __future__ import annotations

from bench.harness import cpu_jiffies, steal_share


def test_steal_is_the_stolen_share_of_the_time_between_two_readings() -> None:
    assert steal_share((100, 1000), (150, 2000)) == 0.05
    assert steal_share((0, 0), (0, 0)) == 0.0  # /proc/stat unreadable: nothing to say


def test_this_machine_reports_a_steal_count_no_larger_than_its_total() -> None:
    stolen, total = cpu_jiffies()
    assert 0 <= stolen <= total
    later = cpu_jiffies()
    assert 0 <= steal_share((stolen, total), later) <= 1
