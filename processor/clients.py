"""The processor's Kafka clients and why each setting has its value.

Per instance: the main consumer (the group, read_committed), the transactional
producer (every output, changelog record and consumed offset of a commit goes through
it), the restore consumer (reads changelogs and the trending candidates back into
local state; no group offsets) and a consumer that only asks for watermarks. Each
starts from the deployment's connection (mysocial.kafka.connection: servers, TLS, SASL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.topics import PROCESSOR_GROUP

# librdkafka's statistics of the main consumer and the producer: the group state
# (processor/membership.py names it when the instance is stuck out of the group) and
# the per-partition figures of processor/metrics.py.
STATS_INTERVAL_MS = 5_000


def group_id(settings: Settings) -> str:
    return settings.topic(PROCESSOR_GROUP)


OnError = Callable[[KafkaError], None]


def main_consumer(
    settings: Settings, on_error: OnError, on_stats: Callable[[str], None]
) -> Consumer:
    """The group member: partition p of likes, comments and posts-by-id (the range
    assignor gives the same p of co-partitioned topics to one member), partitions of
    posts, and the trending candidates. on_error sees librdkafka's error events: a
    fatal one (e.g. fenced as a static member) is not returned by poll()."""
    group = group_id(settings)
    return Consumer(
        kafka_connection(settings).config(
            {
                "error_cb": on_error,
                "stats_cb": on_stats,
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "group.id": group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                # Static membership: a restarted instance (same id) takes its partitions
                # back without a rebalance; zombies are fenced by instance id.
                "group.instance.id": f"{group}.{settings.processor_instance_id}",
                "session.timeout.ms": settings.processor_session_timeout_ms,
                "heartbeat.interval.ms": max(500, settings.processor_session_timeout_ms // 5),
                # Restores run from the main loop, which keeps polling meanwhile, so the
                # default poll interval (5 min) holds even for a long changelog replay.
                "max.poll.interval.ms": 300_000,
                "fetch.wait.max.ms": 50,
                # The prefetch queue is a fixed buffer (librdkafka's default 64 MiB,
                # stated here because M1 counts it as fixed): bounding it lower cost
                # 15-20 % of catch-up throughput in T2.
                "queued.max.messages.kbytes": 65_536,
            }
        )
    )


# Transactional producers per instance, used in turn (processor/checkpoint.py): with one,
# the next transaction's first records wait while the coordinator still writes the
# markers of the commit that just returned (AddPartitionsToTxn answers
# CONCURRENT_TRANSACTIONS and librdkafka retries after 20 ms; it has no KIP-890
# transactions v2, which would not ask). The other producer's last transaction ended
# one commit earlier, so its markers are done.
PRODUCERS = 2


def transactional_id(settings: Settings, index: int = 0) -> str:
    """Stable per instance and producer: a restarted instance fences its zombie's."""
    base = f"{group_id(settings)}.{settings.processor_instance_id}"
    return base if index == 0 else f"{base}.txn{index}"


def transactional_producer(
    settings: Settings,
    on_error: OnError,
    on_stats: Callable[[str], None] | None = None,
    index: int = 0,
) -> Producer:
    """The instance's transactional producer number `index` (transactional_id).
    on_stats: librdkafka's statistics every STATS_INTERVAL_MS (records written)."""
    stats: dict[str, Any] = (
        {"stats_cb": on_stats, "statistics.interval.ms": STATS_INTERVAL_MS} if on_stats else {}
    )
    return Producer(
        kafka_connection(settings).config(
            {
                **stats,
                "error_cb": on_error,
                "transactional.id": transactional_id(settings, index),
                "transaction.timeout.ms": settings.processor_transaction_timeout_ms,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                # As Kafka Streams' default: on two cores the CPU compression takes from
                # the broker and the processor costs more than the bytes it saves.
                "compression.type": "none",
                "partitioner": "murmur2_random",
            }
        )
    )


def transactional_producers(
    settings: Settings, on_error: OnError, on_stats: Callable[[str], None] | None = None
) -> list[Producer]:
    """The instance's PRODUCERS transactional producers, in the order they take turns."""
    return [
        transactional_producer(settings, on_error, on_stats, index) for index in range(PRODUCERS)
    ]


def restore_consumer(settings: Settings) -> Consumer:
    """Manual assignment only; end of partition reported so a replay knows it is done."""
    return Consumer(
        kafka_connection(settings).config(
            {
                "group.id": f"{group_id(settings)}.restore",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
    )


def watermark_consumer(settings: Settings) -> Consumer:
    """Asks for partitions' watermarks, never fetches. read_uncommitted: a
    read_committed consumer reports the last stable offset as the high watermark, and a
    restore must read to the true end (processor/restore.py)."""
    return Consumer(
        kafka_connection(settings).config(
            {
                "group.id": f"{group_id(settings)}.watermarks",
                "isolation.level": "read_uncommitted",
                "enable.auto.commit": False,
            }
        )
    )
