"""`mysocial top`'s arithmetic: quantiles of a histogram's new observations, counter
rates across a restart, and one frame from two reads."""

from __future__ import annotations

import math

from client.top import Scrape, frame, quantile, rate

INF = math.inf


def test_quantile_interpolates_within_the_bucket_of_the_new_observations() -> None:
    before = {0.01: 5.0, 0.1: 5.0, 1.0: 5.0, INF: 5.0}
    # 10 new observations: 4 under 10 ms, 6 between 10 and 100 ms.
    after = {0.01: 9.0, 0.1: 15.0, 1.0: 15.0, INF: 15.0}
    assert math.isclose(quantile(0.2, before, after), 0.005)  # rank 2 of 4 in [0, 10 ms]
    assert math.isclose(quantile(0.7, before, after), 0.01 + 0.09 * (3 / 6))
    assert math.isclose(quantile(1.0, before, after), 0.1)


def test_quantile_without_observations_or_past_the_last_bound() -> None:
    same = {0.1: 3.0, INF: 3.0}
    assert math.isnan(quantile(0.5, same, same))
    assert quantile(0.99, {0.1: 0.0, INF: 0.0}, {0.1: 1.0, INF: 10.0}) == 0.1


def test_rate_counts_a_restarted_counter_from_zero() -> None:
    assert rate(100.0, 150.0, 2.0) == 25.0
    assert rate(100.0, 30.0, 1.0) == 30.0
    assert rate(1.0, 2.0, 0.0) == 0.0


def _scrape(at: float, ok: float, errors: float, lag: float) -> Scrape:
    labels = frozenset({("grpc_service", "mysocial.v1.CommandService")})
    return Scrape(
        at,
        {
            "command": {
                ("grpc_server_handled_total", labels | {("grpc_code", "OK")}): ok,
                ("grpc_server_handled_total", labels | {("grpc_code", "UNAVAILABLE")}): errors,
            },
            "query": None,  # down
            "processor": {
                ("mysocial_processor_consumer_lag", frozenset({("partition", "0")})): lag,
                ("mysocial_processor_consumer_lag", frozenset({("partition", "1")})): 1.0,
            },
        },
    )


def test_frame_from_two_reads() -> None:
    f = frame(_scrape(10.0, 100.0, 0.0, 5.0), _scrape(12.0, 300.0, 4.0, 2.0))
    assert f["up"] == {"command": True, "query": False, "processor": True}
    assert f["ingest_per_s"] == 100.0
    assert f["errors_per_s"] == {"UNAVAILABLE": 2.0}
    assert f["processor_lag"] == 3.0
    assert math.isnan(f["committed_ms"]["p50"])
