"""Why the group's committed offsets cannot be read: an open transaction on the
partition of `__consumer_offsets` that holds them.

A fetch of committed offsets with require_stable (what librdkafka sends for a
read_committed consumer) is answered UNSTABLE_OFFSET_COMMIT while a transaction that
commits offsets for the group is open, and librdkafka retries until its timeout: the
processor only sees "Timed out". A transaction normally ends within the transaction
timeout (the coordinator aborts it then), so one still open when the processor gives
up is most likely hanging: its coordinator forgot it. Kafka does that when a controlled
shutdown leaves a partition without a leader while markers are being sent (it skips
the markers of leaderless partitions as if they were deleted); docs/OPERATIONS.md,
"Hanging transactions", says how to find and end one.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException

from mysocial.config import Settings
from mysocial.kafka.cluster import coordinator_partition
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.reader import stable_and_end_offsets

OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True)
class OpenOffsetsTransaction:
    """The offsets partition of a group holds records of a transaction not ended."""

    group: str
    partition: int
    stable_offset: int  # the last stable offset: where the open transaction starts
    end_offset: int

    def describe(self) -> str:
        return (
            f"the committed offsets of group {self.group!r} are blocked by a transaction "
            f"still open on {OFFSETS_TOPIC}-{self.partition} (last stable offset "
            f"{self.stable_offset}, end {self.end_offset}); open this long it is most "
            "likely hanging: docs/OPERATIONS.md, 'Hanging transactions', says how to find "
            "and end it"
        )


def open_offsets_transaction(
    settings: Settings, group: str, timeout: float = 10.0
) -> OpenOffsetsTransaction | None:
    """The open transaction on `group`'s offsets partition, or None when there is none
    (or the cluster cannot say)."""
    admin = kafka_connection(settings).admin()
    try:
        topic = admin.list_topics(OFFSETS_TOPIC, timeout=timeout).topics.get(OFFSETS_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            return None
        partition = coordinator_partition(group, len(topic.partitions))
        offsets = stable_and_end_offsets(settings, OFFSETS_TOPIC, [partition], timeout)
    except KafkaException:
        return None
    stable, end = offsets[partition]
    if stable >= end:
        return None
    return OpenOffsetsTransaction(group, partition, stable, end)
