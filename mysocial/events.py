"""Decoding and checking event records before they touch any state.

A record that fails here goes to the processor's dead-letter topic with the reason;
the processor, the audit and the query service share these rules so they agree on
which events count.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from google.protobuf.message import DecodeError

from mysocial import ids
from mysocial.kafka import topics
from mysocial.kafka.partitioning import partition_for
from mysocial.v1 import events_pb2 as ev

ALLOWED = {
    topics.POSTS: frozenset({"post_created", "post_deleted"}),
    topics.POSTS_BY_ID: frozenset({"post_created", "post_deleted"}),
    topics.LIKES: frozenset({"post_liked", "post_unliked"}),
    topics.COMMENTS: frozenset({"comment_added", "comment_deleted"}),
}


class InvalidEvent(ValueError):
    """The record cannot be applied; str(exc) is the dead-letter reason."""


@dataclass(frozen=True, slots=True)
class Checked:
    """A decoded, valid event and the fields every consumer needs."""

    event: ev.Event
    kind: str
    post_id: str
    actor: str


@lru_cache(maxsize=65536)
def _cached_partition(post_id: str, partitions: int) -> int:
    return partition_for(post_id.encode(), partitions)


def check(
    source: str, key: bytes | None, value: bytes | None, partition: int, partitions: int
) -> Checked:
    """Decode and validate one record of a source topic (contract name).

    partitions is the topic's partition count: likes, comments and the repartition
    topic must hold each post's events on murmur2(post_id) so state is co-partitioned.
    """
    if value is None:
        raise InvalidEvent("null value")
    event = ev.Event()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"undecodable protobuf: {exc}") from None
    kind = event.WhichOneof("payload")
    if kind is None:
        raise InvalidEvent("unknown or missing event payload")
    if kind not in ALLOWED[source]:
        raise InvalidEvent(f"{kind} does not belong on {source}")
    if not event.event_id:
        raise InvalidEvent("missing event_id")
    if not ids.is_user_id(event.actor_user_id):
        raise InvalidEvent("missing or malformed actor_user_id")
    payload = getattr(event, kind)
    post_id = payload.post_id
    if not ids.is_entity_id(post_id):
        raise InvalidEvent("missing or malformed post_id")
    if kind in ("comment_added", "comment_deleted") and not ids.is_entity_id(payload.comment_id):
        raise InvalidEvent("missing or malformed comment_id")
    if source == topics.POSTS:
        if key is not None and key != event.actor_user_id.encode():
            raise InvalidEvent("posts record key is not the author's user id")
    else:
        if key is not None and key != post_id.encode():
            raise InvalidEvent("record key does not match post_id")
        if _cached_partition(post_id, partitions) != partition:
            raise InvalidEvent(f"misrouted: post_id belongs to another partition than {partition}")
    return Checked(event, kind, post_id, event.actor_user_id)


def event_time_ms(event: ev.Event, accepted_ms: int) -> int:
    """Event time, clamped to when the broker accepted the record (no future times)."""
    occurred = event.occurred_at.seconds * 1000 + event.occurred_at.nanos // 1_000_000
    if occurred <= 0:
        return accepted_ms
    return min(occurred, accepted_ms) if accepted_ms > 0 else occurred
