"""The benchmark suite at tiny sizes: every benchmark of this system runs end to end in
about three minutes, so the benchmark code cannot rot. Figures from this run mean
nothing and are not reported.

The peers (bench/peers: Quix Streams, Kafka Streams, Flink) are left out here: on a
fresh clone their virtualenv and Maven builds alone took minutes of `make test`'s 40.
`make bench-smoke` and `make bench` run them, and fail when a peer's counts differ
from the backlog's ground truth (bench.peers.common.miscounted_peers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mysocial.config import PROJECT_ROOT


# About 4 minutes here on a contended machine: more than the per-test default of
# pyproject.toml.
@pytest.mark.timeout(1500)
def test_benchmark_suite_smoke_run(kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-peers"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(
        (PROJECT_ROOT / "bench" / "results" / "smoke" / "summary.json").read_text()
    )
    for key in (
        "T1_ratio_B1",
        "T2_events_per_s",
        "T2_ratio_B3",
        "T3_ratio",
        "T4_p50_ms",
        "T4_p99_ms",
        "T5_knee_per_s",
        "T5_knee_ratio_T1",
        "T4_p50_ms_at_100",
        "T4_p99_ms_at_100",
        "T5b_capacity_per_s",
        "T5b_capacity_ratio_T1",
        "M1_bytes_per_like",
        "M1_bytes_per_post",
        "R1_query_warm_restart_s",
        "R1_command_warm_restart_s",
        "T6_goodput_ratio",
        "T6_p99_ms",
        "T6_abuser_p99_ratio",
    ):
        assert isinstance(summary[key], int | float), key
    assert summary["machine"]["cores"] >= 1
    results = json.loads((PROJECT_ROOT / "bench" / "results" / "smoke" / "all.json").read_text())
    # No peer ran, and the summary says so rather than inventing a ratio.
    assert not {"P1", "P2", "P3", "P3_latency"} & set(results["catchup"])
    for key in ("T2_ratio_P1", "T2_ratio_P2", "T2_ratio_P3", "P3_p99_ms", "T4_p99_ratio_P3"):
        assert summary[key] is None, key
    # T4's window carries its per-stage breakdown: every stage the like passes was
    # observed by its service's histogram, and CPU is split by role.
    where = results["T4"]["breakdown"]
    for stage in ("ack", "consumed", "committed", "commit", "applied", "written"):
        assert where["stages"][stage]["count"] > 0, stage
        assert 0 <= where["stages"][stage]["p50_ms"] <= where["stages"][stage]["p99_ms"], stage
    assert {"processor", "command", "query", "load"} <= set(where["cpu_cores"])
    # The machine's stolen CPU, in the window and over the run: a share of its time.
    assert 0 <= where["cpu_steal"] <= 1 and 0 <= results["machine"]["cpu_steal"] <= 1
    # T6 reports the service's own produce latency of the acknowledged commands beside
    # the load generator's figure.
    t6 = results["T6"]
    assert 0 < t6["produce_p50_ms"] <= t6["produce_p99_ms"], t6
    # T5b doubles from the window at twice the knee; every window it tried is kept.
    capacity = results["T5b"]
    assert capacity["windows"][0]["rate"] == results["T5"]["double_knee"]["rate"]
    assert capacity["capacity_per_s"] in {0.0, *(w["rate"] for w in capacity["windows"])}
