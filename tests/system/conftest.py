"""The whole system (processor, command and query service as processes) for one test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mysocial.kafka.topics import provision
from tests.support.helpers import make_settings
from tests.support.services import System


@pytest.fixture
def system(kafka_bootstrap: str, tmp_path: Path, log_dir: Path) -> Iterator[System]:
    """JSON logs (tests read their lines); short session and transaction timeouts, so
    a test that stops a service sees its partitions move within seconds."""
    settings = make_settings(
        kafka_bootstrap,
        processor_state_dir=str(tmp_path / "state"),
        processor_session_timeout_ms=6000,
        processor_transaction_timeout_ms=10000,
        log_format="json",
    )
    provision(settings)
    with System(settings, log_dir) as running:
        yield running
