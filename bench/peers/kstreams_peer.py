"""Run the Kafka Streams peer (bench/peers/kstreams, Java 17) and measure it.

The app is built with Maven on first use (and again when its pom or sources change),
with the project's local repository .cache/m2; later runs need no network.

    python -m bench.peers.kstreams_peer --engagements N [--partitions 48] [--threads 2]
        [--commit-interval-ms 100]
"""

from __future__ import annotations

import re
import shutil
import tempfile
from typing import Any

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

NAME = "kstreams"
PROJECT = PROJECT_ROOT / "bench" / "peers" / "kstreams"
POM = PROJECT / "pom.xml"
JAR = PROJECT / "target" / "kstreams-peer.jar"
MAIN_CLASS = "io.mysocial.peers.CountsApp"
THREADS = 2  # one stream thread per core
COMMIT_INTERVAL_MS = 100  # Kafka Streams' default under exactly_once_v2, as the processor


def build() -> list[str]:
    """Build the app with Maven unless up to date; the java classpath entries."""
    return maven_build(PROJECT, JAR, "the Kafka Streams peer")


def kstreams_version() -> str:
    kafka = re.search(r"<kafka\.version>([^<]+)<", POM.read_text())
    return f"kafka-streams {kafka.group(1) if kafka else '?'} ({java_version()})"


def run_kstreams(
    settings: Settings,
    expected_input_events: int,
    timeout: float,
    threads: int = THREADS,
    commit_interval_ms: int = COMMIT_INTERVAL_MS,
    extra_config: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the Kafka Streams peer over the input topics until consumed; the result.

    extra_config: further Kafka Streams / client properties (experiments only).

    Keys: events_per_s (from JVM start to lag 0), events_per_s_excl_startup (from the
    first committed offsets on), seconds, startup_s, correct, mismatches, version, ...
    """
    classpath = build()
    likes, comments = input_topics(settings)
    output = create_output_topic(settings, NAME)
    application_id = group_id(settings, NAME)
    state = tempfile.mkdtemp(prefix="mysocial-peer-kstreams-state-")
    command = ["java", "-cp", ":".join(classpath), MAIN_CLASS]
    for option, value in {
        "bootstrap": settings.bootstrap,
        "application-id": application_id,
        "likes": likes,
        "comments": comments,
        "output": output,
        "threads": str(threads),
        "commit-interval-ms": str(commit_interval_ms),
        "state-dir": state,
    }.items():
        command += [f"--{option}", value]
    for prop, value in (extra_config or {}).items():
        command += [f"--config.{prop}", value]
    try:
        result = run_peer(
            NAME,
            settings,
            application_id,
            [command],
            expected_input_events,
            timeout,
            kstreams_version(),
            PROJECT_ROOT,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    result.update(
        threads=threads,
        commit_interval_ms=commit_interval_ms,
        processing_guarantee="exactly_once_v2",
        extra_config=extra_config or {},
    )
    return result


if __name__ == "__main__":
    main(
        NAME,
        run_kstreams,
        {"threads": (int, THREADS), "commit_interval_ms": (int, COMMIT_INTERVAL_MS)},
    )
