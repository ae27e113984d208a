"""T2: processor catch-up on a backlog (counts and trending), and its memory (M1).

The backlog is written first; then N processor instances start together and the clock
runs until their consumer group has consumed everything (transaction-aware lag 0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Child
from mysocial.config import Settings
from processor.audit import audit, settle, wait_caught_up


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
    try:
        for child in children:
            child.wait_event("partitions_assigned", 120)
        assigned = time.perf_counter()
        deadline = started + timeout
        caught = False
        while time.perf_counter() < deadline:
            for i, child in enumerate(children):
                peak_rss[i] = max(peak_rss[i], child.rss_bytes())
            if wait_caught_up(settings, 0.5):
                caught = True
                break
        finished = time.perf_counter()
        if not caught:
            raise RuntimeError("processors did not catch up in time")
        for i, child in enumerate(children):
            peak_rss[i] = max(peak_rss[i], child.rss_bytes())
        if verify:
            settle(settings, 60)  # let trending publish what it has caught up on
    finally:
        for child in children:
            child.stop()
    result: dict[str, Any] = {
        "instances": instances,
        "events": events,
        "seconds": finished - started,
        "events_per_s": events / (finished - started),
        "startup_s": assigned - started,
        "events_per_s_excl_startup": events / max(finished - assigned, 1e-9),
        "peak_rss_bytes": peak_rss,
    }
    if verify:
        checked = time.perf_counter()
        report = audit(settings)
        result["audit_ok"] = report.ok
        result["audit_mismatches"] = (report.mismatches + report.trending_mismatches)[:10]
        result["audit_posts"] = report.posts_checked
        result["audit_s"] = time.perf_counter() - checked
    return result
