"""Decoding and checking event records before they touch any state.

A record that fails here goes to the processor's dead-letter topic with the reason;
the processor, the audit and the query service share these rules so they agree on
which events count.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

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


class Checked(NamedTuple):
    """A decoded, valid event and the fields every consumer needs (a tuple: built once
    per input event, a frozen dataclass cost ~1 us more)."""

    event: ev.Event
    kind: str
    post_id: str
    actor: str


@lru_cache(maxsize=262_144)
def _post_partition(post_id: str, partitions: int) -> int:
    """The partition of a well-formed post id, -1 if malformed (cached: hot posts repeat)."""
    if not ids.is_entity_id(post_id):
        return -1
    return partition_for(post_id.encode(), partitions)


_COMMENT_KINDS = frozenset({"comment_added", "comment_deleted"})


def check(
    source: str, key: bytes | None, value: bytes | None, partition: int, partitions: int
) -> Checked:
    """Decode and validate one record of a source topic (contract name).

    partitions is the topic's partition count: likes, comments and the repartition
    topic must hold each post's events on murmur2(post_id) so state is co-partitioned.
    Runs once per input event, so the id checks are cached.
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
    actor = event.actor_user_id
    if not ids.is_user_id(actor):
        raise InvalidEvent("missing or malformed actor_user_id")
    payload = getattr(event, kind)
    post_id = payload.post_id
    home = _post_partition(post_id, partitions)
    if home < 0:
        raise InvalidEvent("missing or malformed post_id")
    if kind in _COMMENT_KINDS and not ids.is_entity_id(payload.comment_id):
        raise InvalidEvent("missing or malformed comment_id")
    if source == topics.POSTS:
        if key is not None and key != actor.encode():
            raise InvalidEvent("posts record key is not the author's user id")
    else:
        if key is not None and key != post_id.encode():
            raise InvalidEvent("record key does not match post_id")
        if home != partition:
            raise InvalidEvent(f"misrouted: post_id belongs to another partition than {partition}")
    return Checked(event, kind, post_id, actor)


def event_time_ms(event: ev.Event, accepted_ms: int) -> int:
    """Event time, clamped to when the broker accepted the record (no future times)."""
    ts = event.occurred_at
    occurred = ts.seconds * 1000 + ts.nanos // 1_000_000
    if occurred <= 0:
        return accepted_ms
    return min(occurred, accepted_ms) if accepted_ms > 0 else occurred
