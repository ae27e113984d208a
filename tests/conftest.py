"""Shared fixtures: one real Kafka broker per test session, isolated topics per test.

With KAFKA_BOOTSTRAP_SERVERS set the tests use that cluster; otherwise they start the
project's embedded KRaft broker on free ports in a temporary folder. Each test gets
its own topic namespace, so tests never see each other's events.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from command_service.server import CommandServer
from mysocial import log as logconf
from mysocial.config import Settings
from mysocial.kafka.broker import EmbeddedBroker
from mysocial.kafka.topics import provision
from tests.support.helpers import LoopThread, free_port

logconf.configure("warning", "console", "tests")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    broker = EmbeddedBroker(free_port(pair=True), tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def make_settings(bootstrap: str, **overrides: object) -> Settings:
    """Settings for a test: unique topic namespace, small partition counts."""
    base = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
        posts_partitions=4,
        copartitions=6,
        command_workers=1,
        grace_period_s=5.0,
        log_level="warning",
    )
    return base.with_(**overrides)


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    s = make_settings(kafka_bootstrap)
    provision(s)
    return s


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def command_server(settings: Settings, loop_thread: LoopThread) -> Iterator[CommandServer]:
    server = loop_thread.run(CommandServer.start(settings, "127.0.0.1:0"))
    yield server
    loop_thread.run(server.stop(1.0))


@pytest.fixture
def command_channel(command_server: CommandServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{command_server.port}") as channel:
        yield channel


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d
