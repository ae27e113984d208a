"""`make run`: the whole system in the foreground.

Starts the embedded Kafka, MYSOCIAL_KAFKA_BROKERS nodes (unless KAFKA_BOOTSTRAP_SERVERS
names a cluster), provisions the topics, then runs each service as a child process and
restarts one that dies (the processor exits on fenced/fatal errors by design). Ctrl-C
or SIGTERM stops the services in reverse order, then the Kafka nodes one by one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mysocial import log as logconf
from mysocial.config import Settings
from mysocial.kafka.broker import BrokerError
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.preflight import preflight
from mysocial.kafka.topics import TopicMismatchError, provision

log = logconf.get_logger("run")

SERVICES = ["processor", "command_service", "query_service"]


@dataclass
class Child:
    module: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=os.environ.copy())
        log.info("service_started", service=self.module, pid=self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def available_services() -> list[str]:
    """Services present in this checkout (each is a package with __main__)."""
    import importlib.util

    found = []
    for module in SERVICES:
        if importlib.util.find_spec(module) is not None and importlib.util.find_spec(
            f"{module}.__main__"
        ):
            found.append(module)
    return found


def main() -> int:
    # Development: the services accept the public development JWT secret (unless
    # MYSOCIAL_JWT_SECRET is set) and the CLI mints tokens with it.
    os.environ.setdefault("MYSOCIAL_DEV_MODE", "1")
    settings = Settings.from_env()
    logconf.configure(settings.log_level, settings.log_format, "run")
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    cluster: EmbeddedCluster | None = None
    if settings.embedded_broker:
        cluster = EmbeddedCluster.from_settings(settings)
        try:
            cluster.start()
        except BrokerError as exc:
            log.error("broker_failed", error=str(exc))
            return 1
        logs = [str(node.log_file) for node in cluster.nodes.values()]
        log.info("broker_started", bootstrap=cluster.bootstrap, nodes=len(logs), logs=logs)
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap
    try:
        return _run_services(settings, lambda: stopping)
    finally:
        if cluster is not None:
            cluster.stop()
            log.info("broker_stopped")


def _run_services(settings: Settings, stopping: Callable[[], bool]) -> int:
    unusable = preflight(settings)  # the cluster: one line naming the setting to fix
    if unusable:
        return unusable
    try:
        created = provision(settings)
        log.info("topics_ready", created=created)
    except TopicMismatchError as exc:
        log.error("topic_layout_mismatch", error=str(exc))
        return 2
    children = [Child(m) for m in available_services()]
    for child in children:
        child.start()
    log.info(
        "system_up",
        command=settings.command_addr,
        query=settings.query_addr,
        kafka=settings.bootstrap,
        hint="Ctrl-C stops everything",
    )
    try:
        while not stopping():
            for child in children:
                if stopping() or child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                delay = min(10.0, 0.5 * 2 ** (len(child.restarts) - 1))
                log.error(
                    "service_exited_restarting", service=child.module, code=code, delay_s=delay
                )
                time.sleep(delay)
                if not stopping():
                    child.start()
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            if child.alive() and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(settings.grace_period_s + 20)
            except subprocess.TimeoutExpired:
                log.error("service_kill_after_timeout", service=child.module)
                child.proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
