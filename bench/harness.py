"""Shared benchmark plumbing: a broker, fresh topics, processes, machine facts, results."""

from __future__ import annotations

import atexit
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka.broker import EmbeddedBroker, kafka_version
from mysocial.kafka.broker import free_port as free_port
from mysocial.kafka.broker import free_ports as free_ports
from mysocial.kafka.connection import login_settings
from mysocial.kafka.topics import provision

RESULTS = PROJECT_ROOT / "bench" / "results"

# Settings every benchmark's topics and services get before their own overrides:
# production's partition counts unless the smoke run shrinks them (use_topic_sizes).
_topic_sizes: dict[str, int] = {}
_state_dirs: list[Path] = []


def use_topic_sizes(posts_partitions: int, copartitions: int) -> None:
    """Give the topics of every later fresh_settings these partition counts.

    Why: the smoke run's figures mean nothing, and production's 32 + 48 partitions cost
    its processors and peers most of their start-up (Quix Streams alone took ~50 s to
    take 96 partitions with their changelogs, for 3,000 events)."""
    _topic_sizes.update(posts_partitions=posts_partitions, copartitions=copartitions)


@atexit.register
def _remove_state_dirs() -> None:
    for state in _state_dirs:
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def broker() -> Iterator[str]:
    """The cluster to benchmark against: KAFKA_BOOTSTRAP_SERVERS or a fresh embedded one."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    data = Path(tempfile.mkdtemp(prefix="mysocial-bench-kafka-"))
    # Kafka's production default for the first rebalance of a new group (tests use 0):
    # processors started together join one generation, and none gets a head start on
    # every partition followed by a rebalance mid-run.
    b = EmbeddedBroker(
        free_port(pair=True),
        data,
        heap="2g",
        overrides={"group.initial.rebalance.delay.ms": "3000"},
    )
    b.start()
    try:
        yield b.bootstrap
    finally:
        b.stop()
        shutil.rmtree(data, ignore_errors=True)


def fresh_settings(bootstrap: str, **overrides: Any) -> Settings:
    """Settings with a unique topic namespace and state folder (removed when the
    benchmark process ends); topics provisioned."""
    ns = f"bench{uuid.uuid4().hex[:8]}."
    state = Path(tempfile.mkdtemp(prefix="mysocial-bench-state-"))
    _state_dirs.append(state)
    command_port, query_port = free_ports(2)
    # A cluster named by KAFKA_BOOTSTRAP_SERVERS keeps its TLS and SASL settings.
    env = Settings.from_env()
    login = login_settings(env) if bootstrap == env.kafka_bootstrap_servers else {}
    base = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_namespace=ns,
        processor_state_dir=str(state),
        command_addr=f"127.0.0.1:{command_port}",
        query_addr=f"127.0.0.1:{query_port}",
        log_level="info",
        log_format="json",
        dev_mode=True,  # the benchmark's clients sign tokens with the development secret
        metrics_addr="off",  # several services and trials at once
        quota_points=0,  # the load generators send as one user; T6 measures quotas
        **login,
    )
    settings = base.with_(**{**_topic_sizes, **overrides})
    provision(settings)
    return settings


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(settings.to_env())
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A service process whose JSON log lines can be searched."""

    def __init__(self, module: str, settings: Settings, log: Path, *args: str, **env: str) -> None:
        self.log = log
        # Logs are appended across runs: only lines written by this process count.
        self.start_offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=child_env(settings, **env),
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        with open(self.log, "rb") as f:
            f.seek(self.start_offset)
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            if f'"{name}"' in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited ({self.proc.returncode}); see {self.log}")
            time.sleep(0.05)
        raise TimeoutError(f"no {name} in {self.log} after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode

    def rss_bytes(self) -> int:
        import psutil

        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return 0


def cpu_jiffies() -> tuple[int, int]:
    """(stolen, total) CPU time of the whole machine so far, from /proc/stat: on a
    virtual machine the hypervisor gives some of our cores' time to other guests
    ("steal"), which slows every figure of a run alike; (0, 0) where unknown."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0, 0
    if fields[0] != "cpu" or len(fields) < 9:
        return 0, 0
    counts = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return counts[7], sum(counts)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time stolen between two cpu_jiffies() readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 4) if total > 0 else 0.0


def machine() -> dict[str, Any]:
    """Cores, memory and versions of what a benchmark ran on."""
    import confluent_kafka
    import google.protobuf
    import grpc
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka_version(),
        "java": java[0] if java else "",
        "confluent_kafka": _first(confluent_kafka.version()),
        "librdkafka": _first(confluent_kafka.libversion()),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _first(version: Any) -> str:
    """confluent-kafka returns (text, int) tuples or plain strings depending on version."""
    return str(version[0]) if isinstance(version, tuple) else str(version)
