"""Fixtures shared by every tier: one real Kafka broker per test session, isolated
topics per test, and the processes the integration and system tests run.

The broker starts only when a test asks for it (kafka_bootstrap), so tests/unit never
starts one. With KAFKA_BOOTSTRAP_SERVERS set the tests use that cluster; otherwise they
start the project's embedded KRaft broker on free ports in a temporary folder. Each test
gets its own topic namespace, so tests never see each other's events.

Tests of replication and broker faults ask for kafka_cluster instead: a 3-node KRaft
cluster (mysocial.kafka.cluster.EmbeddedCluster), also started once per session and only
when asked for, and put back together (every node up, every replica in sync) after each
test that uses it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from command_service.server import CommandServer
from mysocial import log as logconf
from mysocial.config import Settings
from mysocial.kafka.broker import EmbeddedBroker
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from tests.support.helpers import (
    STATE_ROOT,
    LoopThread,
    free_port,
    make_settings,
    processor_settings,
)
from tests.support.services import ProcessorProc, command_service
from tests.support.trending import RankingWatcher

logconf.configure("warning", "console", "tests")

TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from its folder: `pytest -m "not system"` works.

    Tests on the shared 3-node cluster run last, together: it lives until the session
    ends, and its three idle nodes took about a quarter of a core (measured) through
    the twenty minutes of tests that used to follow them."""
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    on_cluster = [i for i in items if "kafka_cluster_session" in getattr(i, "fixturenames", ())]
    if on_cluster:
        rest = [i for i in items if i not in on_cluster]
        items[:] = rest + on_cluster


@pytest.fixture(scope="session", autouse=True)
def _local_stores_removed() -> Iterator[None]:
    """The session's local stores (tests.support.helpers.STATE_ROOT) go with it."""
    yield
    shutil.rmtree(STATE_ROOT, ignore_errors=True)


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


@pytest.fixture(scope="session")
def kafka_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """The 3-node cluster, shared by the session; use kafka_cluster in tests."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: no embedded cluster to break")
    cluster = EmbeddedCluster.on_free_ports(3, tmp_path_factory.mktemp("kafka-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kafka_cluster(kafka_cluster_session: EmbeddedCluster) -> Iterator[EmbeddedCluster]:
    """The 3-node cluster; whatever a test killed or paused is back and in sync after it."""
    yield kafka_cluster_session
    kafka_cluster_session.heal()


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


@pytest.fixture
def proc_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return processor_settings(kafka_bootstrap, tmp_path / "state", processor_commit_interval_ms=100)


@pytest.fixture
def trend_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    s = processor_settings(
        kafka_bootstrap, tmp_path / "state", trending_interval_ms=1000, trending_top_k=20
    )
    return s


@pytest.fixture
def running(
    trend_settings: Settings, log_dir: Path
) -> Iterator[tuple[cmd_grpc.CommandServiceStub, ProcessorProc, RankingWatcher]]:
    processor = ProcessorProc(trend_settings, "a", log_dir)
    processor.start()
    watcher = RankingWatcher(trend_settings)
    with command_service(trend_settings, log_dir) as addr:
        channel = grpc.insecure_channel(addr)
        yield cmd_grpc.CommandServiceStub(channel), processor, watcher
        channel.close()
    watcher.close()
    processor.terminate()
