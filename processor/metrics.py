"""The processor's Prometheus metrics (served by mysocial.metrics).

Almost everything is read when Prometheus scrapes, by a collector over counters the
engine keeps anyway and over librdkafka's statistics (every STATS_INTERVAL_MS): the
event path pays nothing per event. What is observed as it happens is per
transaction or per consumed batch: commit duration, events per commit, freshness and
the consume delay.

Freshness is measured per transaction, from the Kafka timestamp of the oldest event
it consumed to the moment its commit returned: the worst case of that transaction,
an upper bound for every event in it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Message
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mysocial.metrics import LATENCY_BUCKETS, ClientStats

# The engine (processor.engine.Processor), read at scrape time; not imported: the
# engine's modules import this one.
Processor = Any

COMMIT_SECONDS = Histogram(
    "mysocial_processor_commit_seconds",
    "Time a transaction's commit took (offsets, flush, commit).",
    buckets=LATENCY_BUCKETS,
)
COMMIT_EVENTS = Histogram(
    "mysocial_processor_commit_events",
    "Input records consumed per committed transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000),
)
CONSUME_DELAY = Histogram(
    "mysocial_processor_consume_delay_seconds",
    "Kafka timestamp of the first event of a consumed batch -> the batch polled (how long "
    "events wait for the processor's loop).",
    buckets=LATENCY_BUCKETS,
)
FRESHNESS = Histogram(
    "mysocial_processor_freshness_seconds",
    "Kafka timestamp of a transaction's oldest event -> its commit returned.",
    buckets=LATENCY_BUCKETS,
)


class TransactionClock:
    """What one transaction consumed, for its metrics (Transaction owns one)."""

    def __init__(self) -> None:
        self.events = 0
        self.oldest_ms = 0

    def consumed(self, msgs: list[Message]) -> None:
        """A batch consumed into the open transaction (its first record is its oldest
        or close to it: batches come in partition order)."""
        if not msgs:
            return
        self.events += len(msgs)
        ts = msgs[0].timestamp()[1]
        if ts > 0:
            CONSUME_DELAY.observe(max(0.0, time.time() - ts / 1000.0))
            if self.oldest_ms == 0 or ts < self.oldest_ms:
                self.oldest_ms = ts

    def committed(self, began: float) -> None:
        COMMIT_SECONDS.observe(time.monotonic() - began)
        if self.events:
            COMMIT_EVENTS.observe(self.events)
        if self.oldest_ms:
            FRESHNESS.observe(max(0.0, time.time() - self.oldest_ms / 1000.0))
        self.reset()

    def reset(self) -> None:
        self.events, self.oldest_ms = 0, 0


class ProcessorCollector(Collector):
    """Reads the engine's counters at scrape time."""

    def describe(self) -> list[Any]:
        """Nothing: without it the registry would collect once at registration, before
        the objects read here exist."""
        return []

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.consumed = ClientStats("rxmsgs")
        self.produced = ClientStats("txmsgs")

    def collect(self) -> Iterator[Any]:
        p = self.processor
        consumed, lag = self.consumed.snapshot()
        produced, _ = self.produced.snapshot()
        yield _counter(
            "mysocial_processor_events_consumed",
            "Records consumed, by topic (librdkafka statistics).",
            "topic",
            consumed,
        )
        yield _counter(
            "mysocial_processor_records_produced",
            "Records written, by topic: projections, changelog, dead letters.",
            "topic",
            produced,
        )
        family = GaugeMetricFamily(
            "mysocial_processor_consumer_lag",
            "Records behind the end of each assigned input partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(lag.items()):
            family.add_metric([topic, str(partition)], value)
        yield family
        yield CounterMetricFamily(
            "mysocial_processor_commits", "Transactions committed.", value=p.txn.commits
        )
        yield CounterMetricFamily(
            "mysocial_processor_aborts", "Transactions aborted.", value=p.txn.aborts
        )
        yield CounterMetricFamily(
            "mysocial_processor_dead_letters",
            "Records parked in the dead-letter topic.",
            value=p.ctx.output.dead_letters,
        )
        yield CounterMetricFamily(
            "mysocial_processor_fatal_errors",
            "Fatal client errors (fenced, or idempotence lost): the instance stops.",
            value=1 if p.fatal is not None else 0,
        )
        states = GaugeMetricFamily(
            "mysocial_processor_tasks", "Tasks of this instance by state.", labels=["state"]
        )
        for state, n in _task_states(p).items():
            states.add_metric([state], n)
        yield states
        yield GaugeMetricFamily(
            "mysocial_processor_restore_remaining",
            "Changelog records still to replay before restoring tasks run.",
            value=_restore_remaining(p),
        )
        yield CounterMetricFamily(
            "mysocial_processor_restored_records",
            "Changelog records replayed for the tasks of the latest assignment.",
            value=p.tasks.restored_records,
        )


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _copy(items: Any) -> list[Any]:
    """A list of a dict's items the processor thread may be changing meanwhile."""
    for _ in range(5):
        try:
            return list(items())
        except RuntimeError:  # changed size during iteration: try again
            continue
    return []


def _task_states(p: Processor) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, task in _copy(p.tasks.tasks.items):
        out[task.state.value] = out.get(task.state.value, 0) + 1
    return out


def _restore_remaining(p: Processor) -> int:
    remaining = 0
    for _, restorations in _copy(p.reader.active_by_owner.items):
        for r in list(restorations):
            remaining += max(0, r.end - max(r.next_offset, 0))
    return remaining


_registered: list[ProcessorCollector] = []


def register(processor: Processor) -> ProcessorCollector:
    """The collector of this process's processor, registered on the default registry
    once (tests build several Processors in one process: the newest is reported)."""
    if not _registered:
        _registered.append(ProcessorCollector(processor))
        REGISTRY.register(_registered[0])
    collector = _registered[0]
    collector.processor = processor
    collector.consumed, collector.produced = ClientStats("rxmsgs"), ClientStats("txmsgs")
    return collector
