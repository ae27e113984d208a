"""T2: processor catch-up on a backlog (counts and trending), and its memory (M1).

The backlog is written first; then N processor instances start together and the clock
runs until their consumer group has consumed everything. The steady rate is timed the
way the peers are (bench/peers/common.py): from the group's first committed progress
on the input topics to lag 0, so process start, group join and restore are excluded
for all of them alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Child
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import group_lag
from mysocial.kafka.topics import PROCESSOR_GROUP
from processor.audit import audit, settle, wait_caught_up

POLL_S = 0.1


def input_lag(settings: Settings) -> int:
    """Records of the contract input topics (posts, likes, comments) not yet committed."""
    names = [settings.topic(n) for n in (topics.POSTS, topics.LIKES, topics.COMMENTS)]
    return group_lag(settings, settings.topic(PROCESSOR_GROUP), names)


def settled(children: list[Child], seconds: float = 3.0) -> list[int]:
    """RSS once caught up: the lowest of each process over a few idle seconds, after
    the last transaction and the prefetched batches were released (what stays is the
    state held, plus the fixed caches)."""
    lowest = [child.rss_bytes() for child in children]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0.2)
        lowest = [min(low, child.rss_bytes()) for low, child in zip(lowest, children, strict=True)]
    return lowest


def run_processors(
    settings: Settings,
    instances: int,
    events: int,
    log_dir: Path,
    verify: bool = True,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Start `instances` processors on the backlog and time them until caught up."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    children = [
        Child(
            "processor",
            settings.with_(processor_instance_id=f"bench{i}"),
            log_dir / f"processor-{i}.log",
        )
        for i in range(instances)
    ]
    peak_rss = [0] * instances
    first: tuple[float, int] | None = None
    try:
        for child in children:
            child.wait_event("partitions_assigned", 120)
        assigned = time.perf_counter()
        deadline = started + timeout
        while True:
            lag = input_lag(settings)
            now = time.perf_counter()
            if first is None and lag < events:
                first = (now, lag)
            if lag == 0:
                break
            for i, child in enumerate(children):
                peak_rss[i] = max(peak_rss[i], child.rss_bytes())
                if child.proc.poll() is not None:
                    raise RuntimeError(f"processor exited; see {child.log}")
            if now > deadline:
                raise RuntimeError(f"processors still {lag} records behind after {timeout}s")
            time.sleep(POLL_S)
        finished = time.perf_counter()
        assert first is not None
        for i, child in enumerate(children):
            peak_rss[i] = max(peak_rss[i], child.rss_bytes())
        settled_rss = settled(children)
        if verify:
            wait_caught_up(settings, 60)  # internal topics too (re-keyed posts, candidates)
            settle(settings, 60)  # let trending publish what it has caught up on
    finally:
        for child in children:
            child.stop()
    steady_s = finished - first[0]
    result: dict[str, Any] = {
        "instances": instances,
        "events": events,
        "seconds": finished - started,
        "events_per_s": events / (finished - started),
        "startup_s": first[0] - started,
        "assigned_s": assigned - started,
        "lag_at_first_commit": first[1],
        "events_per_s_excl_startup": first[1] / max(steady_s, 1e-9),
        "peak_rss_bytes": peak_rss,
        "settled_rss_bytes": settled_rss,
    }
    if verify:
        checked = time.perf_counter()
        report = audit(settings)
        result["audit_ok"] = report.ok
        result["audit_mismatches"] = (report.mismatches + report.trending_mismatches)[:10]
        result["audit_posts"] = report.posts_checked
        result["audit_s"] = time.perf_counter() - checked
    return result
