"""The query service's Prometheus metrics (served by mysocial.metrics).

Subscribers and read-model lag are read when Prometheus scrapes (the hub's sets, the
tailer's librdkafka statistics). Delays are observed once per batch: a batch of
records applied, or a stream's wake-up (its oldest pending change), never per
message, so fan-out to thousands of streams pays nothing per message for them.

The two delays split a change's way through this service: `apply` is the Kafka
timestamp of a projection record (the processor wrote it, just before its commit) to
the read model applying it; `stream` is that change applied to the stream message
written for it. The processor's `mysocial_processor_freshness_seconds` covers the
part before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mysocial.metrics import LATENCY_BUCKETS, ClientStats

STREAM_KINDS = ("posts", "feed", "trending")

APPLY_DELAY = Histogram(
    "mysocial_query_apply_delay_seconds",
    "Kafka timestamp of the oldest projection record of a batch -> applied to the read "
    "model (once the read models are loaded).",
    buckets=LATENCY_BUCKETS,
)
STREAM_DELAY = Histogram(
    "mysocial_query_stream_delay_seconds",
    "A change applied to the read model -> its stream message written, per wake-up of "
    "a stream (its oldest pending change).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
SKIPPED = Counter(
    "mysocial_query_stream_skipped_updates",
    "Updates coalesced into a later message (the stream sent the newer state only).",
    ["kind"],
)
RESYNCS = Counter(
    "mysocial_query_stream_resyncs",
    "Streams too far behind that got a fresh snapshot instead of the changes.",
    ["kind"],
)
STREAM = {kind: STREAM_DELAY.labels(kind) for kind in STREAM_KINDS}
SKIPPED_BY = {kind: SKIPPED.labels(kind) for kind in STREAM_KINDS}
RESYNCS_BY = {kind: RESYNCS.labels(kind) for kind in STREAM_KINDS}


def applied(oldest_time_ms: int) -> None:
    """A batch of projection records was applied (oldest record's Kafka timestamp)."""
    if oldest_time_ms > 0:
        APPLY_DELAY.observe(max(0.0, time.time() - oldest_time_ms / 1000.0))


def delivered(kind: str, since: float) -> None:
    """A stream wrote the messages of a wake-up; since: time.monotonic() of its oldest
    pending change."""
    if since:
        STREAM[kind].observe(max(0.0, time.monotonic() - since))


class QueryCollector(Collector):
    """Subscribers by stream kind and the read model's lag, at scrape time."""

    def describe(self) -> list[Any]:
        """Nothing: without it the registry would collect once at registration, before
        the objects read here exist."""
        return []

    def __init__(self) -> None:
        self.hub: Any = None  # query_service.streams.Hub
        self.tailer_stats = ClientStats("rxmsgs")

    def collect(self) -> Iterator[Any]:
        subscribers = GaugeMetricFamily(
            "mysocial_query_subscribers", "Open streams by kind.", labels=["kind"]
        )
        for kind, n in _subscribers(self.hub).items():
            subscribers.add_metric([kind], n)
        yield subscribers
        _, lag = self.tailer_stats.snapshot()
        family = GaugeMetricFamily(
            "mysocial_query_read_model_lag",
            "Projection records not yet read, per partition (to the last stable offset).",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(lag.items()):
            family.add_metric([topic, str(partition)], value)
        yield family


def _subscribers(hub: Any) -> dict[str, int]:
    if hub is None:
        return dict.fromkeys(STREAM_KINDS, 0)
    for _ in range(5):  # the loop may change the sets meanwhile: try again
        try:
            posts = {id(s) for subs in list(hub.by_post.values()) for s in subs}
            authors = sum(len(subs) for subs in list(hub.by_author.values()))
            return {
                "posts": len(posts),
                "feed": len(hub.feed) + authors,
                "trending": len(hub.trending),
            }
        except RuntimeError:
            continue
    return {}


COLLECTOR = QueryCollector()
REGISTRY.register(COLLECTOR)
