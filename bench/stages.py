"""Where a like's milliseconds go: a per-stage breakdown of one load window.

Each stage is read from the services' own histograms (the names docs/OPERATIONS.md
lists), as two scrapes of /metrics around the window, so the breakdown covers every
event of the window, not a sample, and costs the services nothing per event:

- ack: command handed to the producer → Kafka acknowledged it (acks=all);
  mysocial_command_produce_seconds{topic="likes", outcome="ok"}.
- consumed: the event's Kafka timestamp → the processor polled it (the oldest event of
  each batch); mysocial_processor_consume_delay_seconds.
- committed: the event's Kafka timestamp → its transaction committed (the oldest event
  of each transaction); mysocial_processor_freshness_seconds.
- commit: a commit began → it returned; mysocial_processor_commit_seconds.
- applied: the projection record's timestamp (produced just before the commit) → the
  query service applied it; mysocial_query_apply_delay_seconds.
- written: applied → the stream message written;
  mysocial_query_stream_delay_seconds{kind="posts"}.

Quantiles are interpolated inside histogram buckets (client/top.py's quantile, as
Prometheus' histogram_quantile): a figure is as fine as the bucket it falls in
(mysocial/metrics.py LATENCY_BUCKETS). CPU per process over the window comes from
/proc (psutil), grouped by role, the load generator and the probe included.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import psutil

from bench.harness import cpu_jiffies, steal_share
from client.top import Scrape, quantile, read

STAGES: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("ack", "command", "mysocial_command_produce_seconds", {"topic": "likes", "outcome": "ok"}),
    ("consumed", "processor", "mysocial_processor_consume_delay_seconds", {}),
    ("committed", "processor", "mysocial_processor_freshness_seconds", {}),
    ("commit", "processor", "mysocial_processor_commit_seconds", {}),
    ("applied", "query", "mysocial_query_apply_delay_seconds", {}),
    ("written", "query", "mysocial_query_stream_delay_seconds", {"kind": "posts"}),
)


def buckets(scrape: Scrape, service: str, name: str, labels: dict[str, str]) -> dict[float, float]:
    """A histogram's cumulative bucket counts in one scrape, summed over the label sets
    that include `labels` (the form quantile() takes)."""
    return {
        float(le): v for le, v in scrape.by(service, f"{name}_bucket", "le", **labels).items() if le
    }


def breakdown(before: Scrape, after: Scrape) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) and count of each stage between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for stage, service, name, labels in STAGES:
        b, a = buckets(before, service, name, labels), buckets(after, service, name, labels)
        count = max(a.values(), default=0.0) - max(b.values(), default=0.0)
        out[stage] = {
            "p50_ms": _ms(quantile(0.5, b, a)),
            "p99_ms": _ms(quantile(0.99, b, a)),
            "count": count,
        }
    return out


def _ms(seconds: float) -> float:
    return -1.0 if math.isnan(seconds) else round(seconds * 1000, 2)


def role_of(proc: psutil.Process) -> str:
    """Which part of the system a process is, from its command line or its parent's (a
    command service's workers are spawned children of it)."""
    try:
        line = " ".join(proc.cmdline())
        if "multiprocessing" in line and proc.parent() is not None:
            line += " " + " ".join(proc.parent().cmdline())
    except psutil.Error:
        return "gone"
    if "kafka" in line and "java" in line:
        return "broker"
    for module, role in (
        ("-m processor", "processor"),
        ("command_service", "command"),
        ("query_service", "query"),
    ):
        if module in line:
            return role
    return "load"  # this process, the load generator's workers and the probe


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU time (user + system) by pid of this process and everything it started (the
    benchmark starts the broker, the services, the load generator and the probe)."""
    me = psutil.Process(os.getpid())
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = (role_of(proc), times.user + times.system)
    return out


class Window:
    """Scrapes and CPU times at the start of a window; finish() gives the breakdown."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.began = time.monotonic()
        self.cpu = cpu_seconds()
        self.jiffies = cpu_jiffies()
        self.scrape = read(urls, timeout=5.0)

    def finish(self) -> dict[str, Any]:
        scrape = read(self.urls, timeout=5.0)
        cpu = cpu_seconds()
        seconds = time.monotonic() - self.began
        cores: dict[str, float] = {}
        for pid, (role, used) in cpu.items():
            start = self.cpu.get(pid, (role, 0.0))[1]
            cores[role] = cores.get(role, 0.0) + (used - start) / seconds
        return {
            "seconds": round(seconds, 1),
            "stages": breakdown(self.scrape, scrape),
            "cpu_cores": {role: round(v, 3) for role, v in sorted(cores.items())},
            "cpu_steal": steal_share(self.jiffies, cpu_jiffies()),
        }
