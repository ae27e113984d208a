"""Fault injection for system tests: paused processes that are always resumed, a broker
of a test's own to stall or restart, and a health log that times transitions."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpc_health.v1 import health_pb2

from mysocial.kafka.broker import EmbeddedBroker
from tests.support.helpers import free_port
from tests.support.services import health

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def pause(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGSTOP: the process keeps its sockets open and answers nothing."""
    assert proc is not None and proc.poll() is None
    os.kill(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


@contextmanager
def paused(proc: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """SIGSTOP for the block's duration; SIGCONT however the block ends."""
    pause(proc)
    try:
        yield
    finally:
        resume(proc)


@contextmanager
def own_broker(data_dir: Path) -> Iterator[EmbeddedBroker]:
    """A single-node broker of the test's own, to stall or restart without disturbing
    the session's broker; resumed and stopped however the test ends."""
    broker = EmbeddedBroker(free_port(pair=True), data_dir)
    broker.start()
    try:
        yield broker
    finally:
        resume(broker.proc)
        broker.stop()


class HealthLog:
    """Polls grpc.health.v1 of one service every 50 ms on a thread, recording each
    change of status (None: no answer) with its monotonic time."""

    def __init__(self, addr: str, service: str, interval: float = 0.05) -> None:
        self.addr, self.service, self.interval = addr, service, interval
        self.changes: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last: int | str | None = "unset"
        while not self._stop.is_set():
            status = health(self.addr, self.service, timeout=0.5)
            if status != last:
                self.changes.append((time.monotonic(), status))
                last = status
            self._stop.wait(self.interval)

    @property
    def status(self) -> int | None:
        return self.changes[-1][1] if self.changes else None

    def first(self, status: int, after: float) -> float | None:
        """When the service first reported status after `after` (None: not yet)."""
        return next((t for t, s in self.changes if s == status and t >= after), None)

    def statuses_between(self, start: float, end: float) -> set[int | None]:
        """Every status shown between two instants (the one in force at start too)."""
        before = [s for t, s in self.changes if t <= start]
        during = {s for t, s in self.changes if start < t <= end}
        return during | set(before[-1:])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
