"""The unit tier runs without Kafka: a test here that needs the broker (directly or
through another fixture) fails before the broker would start."""

from __future__ import annotations

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    names = getattr(item, "fixturenames", ())
    if "kafka_bootstrap" in names or "kafka_cluster_session" in names:
        pytest.fail("a unit test may not use the broker: move it to tests/integration")
