"""Test helpers: waiting on conditions, reading topics, running servers on free ports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET, PROJECT_ROOT, Settings
from mysocial.kafka import reader
from mysocial.kafka.broker import free_port as free_port
from mysocial.kafka.broker import free_ports as free_ports
from mysocial.kafka.connection import Cluster, login_settings
from mysocial.kafka.reader import Record as Record
from mysocial.kafka.topics import provision
from mysocial.v1 import events_pb2 as ev

T = TypeVar("T")


# Where tests' local stores go unless a test names a folder (removed after the session).
STATE_ROOT = Path(tempfile.gettempdir()) / f"mysocial-tests-{os.getpid()}"


def make_settings(bootstrap: str, **overrides: object) -> Settings:
    """Settings for a test: unique topic namespace, small partition counts, development
    mode (tokens signed with the development secret); a cluster named by
    KAFKA_BOOTSTRAP_SERVERS keeps its TLS and SASL settings."""
    env = Settings.from_env()
    login = login_settings(env) if bootstrap == env.kafka_bootstrap_servers else {}
    namespace = f"t{uuid.uuid4().hex[:10]}."
    base = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_namespace=namespace,
        # Local stores (processor, directory, read models) of this test only.
        processor_state_dir=str(STATE_ROOT / namespace),
        posts_partitions=4,
        copartitions=6,
        command_workers=1,
        grace_period_s=5.0,
        log_level="warning",
        dev_mode=True,
        metrics_addr="off",  # tests run many services at once; metrics tests set a port
        quota_points=0,  # workloads send as fast as they can; quota tests set them
        **login,
    )
    return base.with_(**overrides)


def processor_settings(bootstrap: str, state: Path, **overrides: Any) -> Settings:
    """Settings for a test that runs processors, topics provisioned: short session and
    transaction timeouts (a dead or fenced instance's partitions move in seconds) and
    the state folder given."""
    settings = make_settings(
        bootstrap,
        processor_state_dir=str(state),
        processor_session_timeout_ms=6000,
        processor_transaction_timeout_ms=10000,
        **overrides,
    )
    provision(settings)
    return settings


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll condition until it returns a truthy value; fail after timeout (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition}: {last!r}"
            )
        time.sleep(interval)


Metadata = tuple[tuple[str, str | bytes], ...]


def auth(user: str, secret: str = DEV_JWT_SECRET, ttl: int = 3600) -> Metadata:
    """gRPC metadata with a bearer token for user."""
    return (("authorization", f"Bearer {mint_token(user, secret, ttl)}"),)


def read_topic(cluster: Cluster, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every committed record of topic, from the beginning to its current end."""
    return reader.read_topic(cluster, topic, timeout)


def events(settings: Settings, topic: str) -> list[tuple[Record, ev.Event]]:
    """Every committed record of a topic of settings' namespace, decoded as an Event."""
    out = []
    for rec in read_topic(settings, settings.topic(topic)):
        e = ev.Event()
        e.ParseFromString(rec.value or b"")
        out.append((rec, e))
    return out


class LoopThread:
    """An asyncio loop in a background thread, to host grpc.aio servers in tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def python_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(settings.to_env())
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def service_process(
    module: str,
    settings: Settings,
    log_path: Path,
    *args: str,
    new_session: bool = False,
    **extra_env: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m module` with settings; kill it on exit if still running.

    new_session: its own process group, so a test can signal the group as a
    terminal's Ctrl-C does."""
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=python_env(settings, **extra_env),
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=new_session,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
