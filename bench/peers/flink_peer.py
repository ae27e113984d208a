"""Run the Apache Flink peer (bench/peers/flink, Java 17) and measure it.

The job is built with Maven on first use (and again when its pom or sources change),
with the project's local repository .cache/m2; later runs need no network. It runs on a
local MiniCluster in one JVM (heap 1 GiB), parallelism 2, checkpointing exactly once
every 100 ms.

    python -m bench.peers.flink_peer --engagements N [--partitions 48] [--parallelism 2]
        [--checkpoint-interval-ms 100]
        [--latency-rate 100 [--latency-seconds 60] [--latency-warmup-seconds 30]]

With --latency-rate, once caught up the run also measures like → visible latency at that
rate after an unmeasured warm-up window (bench/peers/latency.py), the peer's
counterpart of T4; use a small backlog then.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from typing import Any

from bench.peers import latency
from bench.peers.common import (
    create_output_topic,
    group_id,
    input_topics,
    java_version,
    main,
    maven_build,
    run_peer,
)
from mysocial.config import PROJECT_ROOT, Settings

NAME = "flink"
PROJECT = PROJECT_ROOT / "bench" / "peers" / "flink"
POM = PROJECT / "pom.xml"
JAR = PROJECT / "target" / "flink-peer.jar"
MAIN_CLASS = "io.mysocial.peers.CountsJob"
PARALLELISM = 2  # one task slot per core
# The processor's and the Kafka Streams peer's commit interval: a checkpoint is Flink's
# commit (the sink's transaction commits when it completes).
CHECKPOINT_INTERVAL_MS = 100
HEAP = "1g"
LATENCY_BACKLOG = (1_000, 10_000)  # (posts, engagements) the latency window starts after


def build() -> list[str]:
    """Build the job with Maven unless up to date; the java classpath entries."""
    return maven_build(PROJECT, JAR, "the Flink peer")


def flink_version() -> str:
    pom = POM.read_text()
    flink = re.search(r"<flink\.version>([^<]+)<", pom)
    kafka = re.search(r"<flink\.kafka\.version>([^<]+)<", pom)
    return (
        f"flink {flink.group(1) if flink else '?'}, flink-connector-kafka "
        f"{kafka.group(1) if kafka else '?'} ({java_version()})"
    )


def run_flink(
    settings: Settings,
    expected_input_events: int,
    timeout: float,
    parallelism: int = PARALLELISM,
    checkpoint_interval_ms: int = CHECKPOINT_INTERVAL_MS,
    latency_rate: float = 0.0,
    latency_seconds: float = latency.SECONDS,
    latency_warmup_seconds: float = latency.WARMUP_SECONDS,
    extra_config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the Flink peer over the input topics until consumed; the result.

    latency_rate > 0: then, still running, a like → visible window at that rate for
    latency_seconds after latency_warmup_seconds unmeasured (result["latency"],
    bench/peers/latency.py).
    extra_config: further Flink configuration options (experiments only).

    Keys as run_kstreams: events_per_s (from JVM start to lag 0),
    events_per_s_excl_startup (from the first committed offsets on), seconds,
    startup_s, correct, mismatches, version, ...
    """
    classpath = build()
    likes, comments = input_topics(settings)
    output = create_output_topic(settings, NAME)
    group = group_id(settings, NAME)
    state = tempfile.mkdtemp(prefix="mysocial-peer-flink-state-")
    command = [
        "java",
        f"-Xmx{HEAP}",
        f"-Djava.io.tmpdir={state}",
        "-cp",
        ":".join(classpath),
        MAIN_CLASS,
    ]
    for option, value in {
        "bootstrap": settings.bootstrap,
        "group-id": group,
        "likes": likes,
        "comments": comments,
        "output": output,
        "parallelism": str(parallelism),
        "checkpoint-interval-ms": str(checkpoint_interval_ms),
        "state-dir": state,
    }.items():
        command += [f"--{option}", value]
    for prop, value in (extra_config or {}).items():
        command += [f"--config.{prop}", value]

    def window() -> dict[str, Any]:
        return latency.warm_then_measure(
            settings, NAME, latency_rate, latency_seconds, latency_warmup_seconds
        )

    try:
        result = run_peer(
            NAME,
            settings,
            group,
            [command],
            expected_input_events,
            timeout,
            flink_version(),
            PROJECT_ROOT,
            while_caught_up=window if latency_rate > 0 else None,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    if "while_caught_up" in result:
        result["latency"] = result.pop("while_caught_up")
    result.update(
        parallelism=parallelism,
        checkpoint_interval_ms=checkpoint_interval_ms,
        processing_guarantee="checkpoints EXACTLY_ONCE, KafkaSink EXACTLY_ONCE",
        heap=HEAP,
        extra_config=extra_config or {},
    )
    return result


def run_flink_latency(
    settings: Settings,
    expected_input_events: int,
    timeout: float = 600.0,
    rate: float = latency.RATE,
    seconds: float = latency.SECONDS,
    warmup_seconds: float = latency.WARMUP_SECONDS,
    **options: Any,
) -> dict[str, Any]:
    """The Flink peer caught up on the backlog in settings' topics, then likes at `rate`:
    `warmup_seconds` unmeasured, then a like → visible window of `seconds`; run_flink's
    result with "latency" (p50_ms, p99_ms, ...)."""
    return run_flink(
        settings,
        expected_input_events,
        timeout,
        latency_rate=rate,
        latency_seconds=seconds,
        latency_warmup_seconds=warmup_seconds,
        **options,
    )


if __name__ == "__main__":
    main(
        NAME,
        run_flink,
        {
            "parallelism": (int, PARALLELISM),
            "checkpoint_interval_ms": (int, CHECKPOINT_INTERVAL_MS),
            "latency_rate": (float, 0.0),
            "latency_seconds": (float, latency.SECONDS),
            "latency_warmup_seconds": (float, latency.WARMUP_SECONDS),
        },
    )
