"""Warm or cold start: whether a local store built from Kafka topics can be reused,
decided once at start (the query service's read models, the command service's
directory).

A store is reused (warm: each partition is read on from its stored next offset, so
only what arrived meanwhile is replayed) only if it was built from this deployment:
the same layout format, topic namespace and Kafka cluster, the same topics (by topic
id: a topic deleted and created again has a new id and starts over at offset 0),
every stored offset within its partition's current range, and the last time it was
known caught up with the topics no longer ago than the compacted topics'
`delete.retention.ms` (longer: tombstones past its offsets may have been compacted
away, leaving deleted posts alive in it; a store that never caught up, such as an
interrupted rebuild, cannot tell, so it starts over). Otherwise the store is wiped
and rebuilt from the beginning (cold). Either way the decision and its reason are
logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import IsolationLevel, TopicCollection, TopicPartition
from confluent_kafka.admin import ConfigResource, OffsetSpec

from mysocial.kafka.connection import KafkaConnection

Key = tuple[str, int]


@dataclass(frozen=True)
class Plan:
    marker: dict[str, Any]  # what identifies this deployment (stored with the data)
    starts: dict[Key, int]  # where the tailer starts; partitions not named: beginning
    cold_reason: str  # why the store must be wiped and rebuilt; "" = warm start


def plan(
    connection: KafkaConnection,
    layout: int,
    topics: list[str],
    compacted: list[str],
    namespace: str,
    stored: Mapping[str, Any] | None,
    offsets: Mapping[Key, int],
    caught_up_at: float | None,
    timeout: float = 30.0,
) -> Plan:
    """Ask the cluster what it holds now and compare with what the store says.

    layout: the version of the owner's store layout (a store in another is rebuilt).
    caught_up_at: wall time the stored offsets last reached the topics' ends (every
    record past them is younger); None: never (with offsets stored: rebuilt).
    Blocking (admin requests): run it off the event loop.
    """
    admin = connection.admin()
    cluster_id = admin.list_topics(timeout=timeout).cluster_id
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    described = {name: future.result(timeout) for name, future in futures.items()}
    marker = {
        "format": layout,
        "namespace": namespace,
        "cluster_id": cluster_id,
        "topic_ids": {name: str(d.topic_id) for name, d in sorted(described.items())},
    }
    reason = _changed(marker, stored)
    if not reason:
        partitions = {(n, p.id) for n, d in described.items() for p in d.partitions}
        reason = _out_of_range(admin, offsets, partitions, timeout)
    if not reason and offsets:
        if caught_up_at is None:
            reason = "the last build never caught up"
        else:
            reason = _too_old(admin, compacted, time.time() - caught_up_at, timeout)
    return Plan(marker, {} if reason else dict(offsets), reason)


def _changed(marker: Mapping[str, Any], stored: Mapping[str, Any] | None) -> str:
    if stored is None:
        return "no local store"
    for name, now in marker.items():
        before = stored.get(name)
        if before != now:
            what = "topics were recreated" if name == "topic_ids" else f"{name} differs"
            return f"{what}: store has {before!r}, cluster has {now!r}"
    return ""


def _out_of_range(
    admin: Any, offsets: Mapping[Key, int], partitions: set[Key], timeout: float
) -> str:
    """Why a stored offset cannot be read on from (a partition gone, its records
    deleted, or an offset past its end: the topic was truncated), or ""."""
    for key in offsets:
        if key not in partitions:
            return f"partition {key[0]}[{key[1]}] no longer exists"
    ends: dict[str, dict[Key, int]] = {}
    specs = (("start", OffsetSpec.earliest()), ("end", OffsetSpec.latest()))  # type: ignore[no-untyped-call]
    for name, spec in specs:
        request = {TopicPartition(t, p): spec for t, p in offsets}
        answers = admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=timeout
        )
        ends[name] = {(t.topic, t.partition): f.result(timeout).offset for t, f in answers.items()}
    for key, offset in sorted(offsets.items()):
        start, end = ends["start"][key], ends["end"][key]
        if offset > end:
            return f"stored offset {offset} of {key[0]}[{key[1]}] is past its end {end}"
        if offset < start:
            return f"records {offset}..{start - 1} of {key[0]}[{key[1]}] were deleted"
    return ""


def _too_old(admin: Any, compacted: list[str], age_s: float, timeout: float) -> str:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in compacted]
    retention_ms = min(
        int(future.result(timeout)["delete.retention.ms"].value)
        for future in admin.describe_configs(resources, request_timeout=timeout).values()
    )
    if age_s * 1000 > retention_ms:
        return (
            f"last caught up {age_s:.0f} s ago, longer than delete.retention.ms "
            f"({retention_ms} ms): tombstones may have been compacted away"
        )
    return ""
