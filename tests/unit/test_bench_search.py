"""The benchmark's rate searches (bench/freshness.py): the T5 knee and T5b capacity.

Windows are simulated: a system that keeps its p99 under the target up to one rate,
keeps up (lag stable) up to a higher one, and whose front door takes a bounded rate.
The searches must land on those rates from their sequences of windows.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import freshness


class Simulated:
    """Window results of a system with a latency knee, a capacity and a front door."""

    def __init__(self, knee: float, capacity: float, front_door: float) -> None:
        self.knee, self.capacity, self.front_door = knee, capacity, front_door
        self.rates: list[float] = []

    def window(self, _system: Any, rate: float, _seconds: float) -> dict[str, Any]:
        self.rates.append(rate)
        accepted = min(rate, self.front_door)
        behind = 0 if rate <= self.capacity else int(rate * 10)
        result = {
            "rate": rate,
            "accepted_per_s": accepted,
            "lag_start": 5,
            "lag_end": 5 + behind,
            "p99_ms": 40.0 if rate <= self.knee else 400.0,
        }
        result["sustainable"] = freshness.keeps_up(result) and result["p99_ms"] <= 100.0
        return result


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> Simulated:
    sim = Simulated(knee=130.0, capacity=900.0, front_door=5000.0)
    monkeypatch.setattr(freshness, "window", sim.window)
    return sim


def test_the_knee_is_bisected_between_the_last_rate_that_held_and_the_first_that_failed(
    simulated: Simulated,
) -> None:
    found = freshness.knee(None, [50.0, 100.0, 200.0, 400.0], 60.0)  # type: ignore[arg-type]
    # 100 holds, 200 fails; 150 fails, 125 holds: the knee is 125 (the true one is 130).
    assert found["knee_per_s"] == 125.0
    assert simulated.rates == [50, 50, 100, 100, 200, 200, 150, 150, 125, 125]


def test_capacity_doubles_from_twice_the_knee_then_bisects(simulated: Simulated) -> None:
    first = simulated.window(None, 250.0, 60.0)
    found = freshness.capacity(None, first, 60.0)  # type: ignore[arg-type]
    # 250, 500 keep up; 1000 does not; 750 does, 875 does: capacity 875 (true: 900).
    assert [w["rate"] for w in found["windows"]] == [250, 500, 1000, 750, 875]
    assert found["capacity_per_s"] == 875.0
    assert found["limited_by"] == "processing"


def test_capacity_names_the_front_door_when_the_load_could_not_be_offered(
    simulated: Simulated,
) -> None:
    simulated.capacity, simulated.front_door = 10_000.0, 600.0
    found = freshness.capacity(None, simulated.window(None, 400.0, 60.0), 60.0)  # type: ignore[arg-type]
    assert found["capacity_per_s"] == 600.0
    assert found["limited_by"] == "ingest"


def test_capacity_stops_at_its_ceiling(simulated: Simulated) -> None:
    simulated.capacity, simulated.front_door = 1e9, 1e9
    first = simulated.window(None, 100.0, 1.0)
    found = freshness.capacity(None, first, 1.0, ceiling=400.0)  # type: ignore[arg-type]
    assert found["capacity_per_s"] == 400.0
    assert found["limited_by"] is None
