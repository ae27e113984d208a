"""Smoke test of the benchmark peers (bench/peers): each one, run through its runner on a
small backlog, must produce exactly the counts of the ground truth.

The first run builds the Kafka Streams app and the Flink job with Maven and creates the
Quix virtualenv (all cached under .cache/); figures come from
`python -m bench.peers.<peer>_peer`, not from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.backlog import BacklogSpec, write_backlog
from bench.harness import fresh_settings
from bench.peers.common import Runner
from bench.peers.flink_peer import run_flink, run_flink_latency
from bench.peers.kstreams_peer import run_kstreams
from bench.peers.quix_peer import run_quix
from mysocial.config import Settings

POSTS = 200
ENGAGEMENTS = 5_000


@pytest.fixture(scope="module")
def backlog(kafka_bootstrap: str) -> Iterator[tuple[Settings, int]]:
    settings = fresh_settings(kafka_bootstrap, copartitions=4, posts_partitions=4)
    written, _ = write_backlog(settings, BacklogSpec(posts=POSTS, engagements=ENGAGEMENTS))
    yield settings, written - POSTS


@pytest.mark.parametrize(
    "runner", [run_kstreams, run_quix, run_flink], ids=["kstreams", "quix", "flink"]
)
def test_peer_counts_match_ground_truth(backlog: tuple[Settings, int], runner: Runner) -> None:
    settings, events = backlog
    assert events == ENGAGEMENTS
    result: dict[str, Any] = runner(settings, events, 240.0)
    assert result["correct"] is True, result
    assert result["mismatches"] == 0
    assert result["posts_checked"] > POSTS // 2
    assert result["events_per_s"] > 0


def test_flink_latency_window(kafka_bootstrap: str) -> None:
    """The latency mode: caught up, then likes at a rate; every like shows up, counted."""
    settings = fresh_settings(kafka_bootstrap, copartitions=4, posts_partitions=4)
    written, _ = write_backlog(settings, BacklogSpec(posts=20, engagements=500))
    result = run_flink_latency(
        settings, written - 20, 240.0, rate=20.0, seconds=3.0, warmup_seconds=1.0
    )
    assert result["correct"] is True, result
    window = result["latency"]
    assert window["produced"] == window["acked"] == window["samples"] == 60, window
    assert window["missing"] == 0
    assert 0 < window["p50_ms"] <= window["p99_ms"], window
    assert window["warmup"]["missing"] == 0, window
