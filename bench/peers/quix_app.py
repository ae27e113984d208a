"""Quix Streams peer of the processor's count aggregation (runs in .cache/venv-quix).

Started by `bench.peers.quix_peer` with the Quix virtualenv's interpreter and the project
root as working directory, so the project's generated `mysocial.v1` protobuf code is
importable (the venv pins the same protobuf runtime as the project).

    likes ──┐
            ├── concat ── apply(count, stateful) ── filter(changed) ── to_topic(output)
    comments┘

Both inputs are keyed by post id and co-partitioned, so Quix's per-key State (prefixed
by the message key) is the per-post state: one entry per user who likes the post, one per
comment id (live or deleted) and the two counts. No group_by is needed: the records are
already keyed by post id.
"""

from __future__ import annotations

import argparse
import struct
from typing import Any

from quixstreams import Application, State  # type: ignore[import-not-found]
from quixstreams.models.serializers.protobuf import (  # type: ignore[import-not-found]
    ProtobufDeserializer,
)

from mysocial.v1 import events_pb2 as ev

COUNTS = struct.Struct(">ii")  # like_count, comment_count (same encoding as the Java peer)
LIVE, DELETED = 1, 0


def count(event: ev.Event, key: str, _ts: int, _headers: Any, state: State) -> bytes | None:
    """Apply one event to its post's state; the new counts when they changed, else None.

    State keys (Quix prefixes them with the message key, the post id): "l<user>" while
    the user likes the post, "c<comment id>" -> LIVE/DELETED, "n" -> [likes, comments].
    """
    kind = event.WhichOneof("payload")
    if kind == "post_liked" or kind == "post_unliked":
        if getattr(event, kind).post_id != key:
            return None
        user_key = "l" + event.actor_user_id
        liked = state.exists(user_key)
        if (kind == "post_liked") == liked:
            return None  # like after like, or unlike without a like
        if liked:
            state.delete(user_key)
        else:
            state.set(user_key, 1)
        likes_delta, comments_delta = (-1 if liked else 1), 0
    elif kind == "comment_added":
        if event.comment_added.post_id != key:
            return None
        comment_key = "c" + event.comment_added.comment_id
        if state.exists(comment_key):
            return None  # retried add, or add after delete: counts once, never revived
        state.set(comment_key, LIVE)
        likes_delta, comments_delta = 0, 1
    elif kind == "comment_deleted":
        if event.comment_deleted.post_id != key:
            return None
        comment_key = "c" + event.comment_deleted.comment_id
        if state.get(comment_key) != LIVE:
            return None  # unknown or already deleted
        state.set(comment_key, DELETED)
        likes_delta, comments_delta = 0, -1
    else:
        return None
    likes, comments = state.get("n", (0, 0))
    counts = [likes + likes_delta, comments + comments_delta]
    state.set("n", counts)
    return COUNTS.pack(*counts)


def build(args: argparse.Namespace) -> Application:
    """The Application with its dataframe wired (not yet running)."""
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel="INFO",
    )
    events = ProtobufDeserializer(ev.Event, to_dict=False)
    likes = app.topic(args.likes, key_deserializer="str", value_deserializer=events)
    comments = app.topic(args.comments, key_deserializer="str", value_deserializer=events)
    output = app.topic(args.output, key_serializer="str", value_serializer="bytes")
    sdf = app.dataframe(likes).concat(app.dataframe(comments))
    sdf = sdf.apply(count, stateful=True, metadata=True).filter(lambda v: v is not None)
    sdf.to_topic(output)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--likes", required=True)
    parser.add_argument("--comments", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--commit-interval", type=float, default=0.1)
    build(parser.parse_args(argv)).run()


if __name__ == "__main__":
    main()
