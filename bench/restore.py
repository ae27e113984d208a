"""How fast a processor instance restores its state (issue: processor, "measure it").

Builds state from a backlog, stops the processor, then measures two restarts:
warm (local RocksDB kept: replay only the changelog tail after its checkpoint) and
cold (state folder deleted: rebuild everything from the changelog topic).

    python -m bench.restore [--engagements N] [--posts N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.backlog import BacklogSpec, write_backlog
from bench.harness import Child, broker, fresh_settings, machine, write_result
from mysocial.kafka import topics
from mysocial.kafka.reader import latest_by_key
from processor.audit import wait_caught_up


def run(engagements: int, posts: int, partitions: int) -> dict[str, object]:
    with broker() as bootstrap:
        settings = fresh_settings(bootstrap, copartitions=partitions, posts_partitions=partitions)
        events, _ = write_backlog(settings, BacklogSpec(posts=posts, engagements=engagements))
        logs = Path(settings.processor_state_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        first = Child("processor", settings, logs / "build.log")
        started = time.monotonic()
        first.wait_event("partitions_assigned", 120)
        if not wait_caught_up(settings, 1800):
            raise RuntimeError("processor did not catch up")
        build_s = time.monotonic() - started
        first.stop()
        changelog = latest_by_key(settings, settings.topic(topics.PROCESSOR_CHANGELOG))
        live_keys = sum(1 for v in changelog.values() if v is not None)

        warm = Child("processor", settings, logs / "warm.log")
        warm_event = warm.wait_event("partitions_assigned", 600)
        warm.stop()
        state_dir = Path(settings.processor_state_dir)
        for child in state_dir.iterdir():
            if child.name != "logs":
                shutil.rmtree(child)
        cold = Child("processor", settings, logs / "cold.log")
        cold_event = cold.wait_event("partitions_assigned", 1800)
        cold.stop()
        result = {
            "events": events,
            "partitions": partitions,
            "build_s": round(build_s, 2),
            "changelog_live_keys": live_keys,
            "warm_restore_s": warm_event["restore_s"],
            "warm_restored_records": warm_event["restored_records"],
            "cold_restore_s": cold_event["restore_s"],
            "cold_restored_records": cold_event["restored_records"],
            "cold_records_per_s": round(
                cold_event["restored_records"] / max(cold_event["restore_s"], 1e-9)
            ),
            "machine": machine(),
        }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engagements", type=int, default=300_000)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    result = run(args.engagements, args.posts, args.partitions)
    path = write_result("restore", result)
    for key in (
        "events",
        "build_s",
        "changelog_live_keys",
        "warm_restore_s",
        "warm_restored_records",
        "cold_restore_s",
        "cold_restored_records",
        "cold_records_per_s",
    ):
        print(f"{key:>24}: {result[key]}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
