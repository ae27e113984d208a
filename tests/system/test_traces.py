"""Traces end to end: a command's correlation id and W3C traceparent reach its event,
the posts_with_counts record that includes it, the Watch streams and the log lines of
the call (real broker, processor, command and query processes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mysocial.kafka import topics
from mysocial.kafka.reader import read_topic
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from tests.support.helpers import auth, events, make_settings, wait_until
from tests.support.services import System
from tests.system.test_query_service import StreamReader

LIKE_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CREATE_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def system(kafka_bootstrap: str, tmp_path: Path, log_dir: Path) -> Iterator[System]:
    settings = make_settings(
        kafka_bootstrap, processor_state_dir=str(tmp_path / "state"), log_format="json"
    )
    provision(settings)
    with System(settings, log_dir) as running:
        yield running


def traced(user: str, correlation_id: str | None, traceparent: str | None) -> Any:
    md = list(auth(user))
    if correlation_id is not None:
        md.append(("x-correlation-id", correlation_id))
    if traceparent is not None:
        md.append(("traceparent", traceparent))
    return tuple(md)


def echoed(call: Any) -> str:
    """The correlation id the service echoed in trailing metadata."""
    return str(dict(call.trailing_metadata())["x-correlation-id"])


def log_lines(path: Path, correlation_id: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if correlation_id in line and line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_a_commands_trace_reaches_its_event_the_projection_and_the_streams(
    system: System, log_dir: Path
) -> None:
    commands, queries = system.commands(), system.queries()
    post, call = commands.CreatePost.with_call(
        cmd.CreatePostRequest(caption="traced"),
        metadata=traced("alice", "trace-create-1", CREATE_PARENT),
    )
    assert echoed(call) == "trace-create-1"
    pid = post.post_id
    watch = StreamReader(
        queries.WatchPosts(
            q.WatchPostsRequest(post_ids=[pid], consistency_token=post.consistency_token)
        )
    )
    feed = StreamReader(queries.WatchFeed(q.WatchFeedRequest(author_id="alice")))
    try:
        wait_until(lambda: watch.messages and feed.messages, timeout=30, what="snapshots")
        _, call = commands.LikePost.with_call(
            cmd.LikePostRequest(post_id=pid),
            metadata=traced("bob", "trace-like-1", LIKE_PARENT),
        )
        assert echoed(call) == "trace-like-1"
        # A malformed traceparent is dropped (W3C: never an error); a call without a
        # correlation id gets a minted one, the same in its answer and its event.
        _, plain = commands.LikePost.with_call(
            cmd.LikePostRequest(post_id=pid), metadata=traced("carol", None, "00-zz-bad")
        )
        minted = echoed(plain)

        def shown(reader: StreamReader, cid: str) -> Any:
            for _, message in reader.messages:
                if cid in message.correlation_ids:
                    return message
            return None

        message = wait_until(
            lambda: shown(watch, minted), timeout=30, what="the likes on the WatchPosts stream"
        )
        assert message.post.like_count == 2
        first = shown(watch, "trace-like-1")
        assert first is not None and first.post.like_count >= 1
        assert LIKE_PARENT in first.traceparents
        assert list(message.correlation_ids)[-1] == minted  # newest last
        assert message.traceparents == first.traceparents or LIKE_PARENT in message.traceparents
        update = wait_until(lambda: shown(feed, minted), timeout=30, what="the feed update")
        assert update.kind in (q.FEED_EVENT_KIND_CREATED, q.FEED_EVENT_KIND_UPDATED)
        assert "trace-like-1" in update.correlation_ids and LIKE_PARENT in update.traceparents
        assert watch.error is None and feed.error is None
    finally:
        watch.close()
        feed.close()

    settings = system.settings
    likes = {e.actor_user_id: (rec, e) for rec, e in events(settings, topics.LIKES)}
    rec, event = likes["bob"]
    assert (event.correlation_id, event.traceparent) == ("trace-like-1", LIKE_PARENT)
    assert (rec.headers["correlation-id"], rec.headers["traceparent"]) == (
        b"trace-like-1",
        LIKE_PARENT.encode(),
    )
    rec, event = likes["carol"]
    assert (event.correlation_id, event.traceparent) == (minted, "")
    assert rec.headers["correlation-id"] == minted.encode() and "traceparent" not in rec.headers
    (_, created), *_ = events(settings, topics.POSTS)
    assert (created.correlation_id, created.traceparent) == ("trace-create-1", CREATE_PARENT)

    # The projection records carry every id they include as repeated headers.
    records = [
        r
        for r in read_topic(settings, settings.topic(topics.POSTS_WITH_COUNTS))
        if r.key == pid.encode()
    ]
    ids = [v.decode() for r in records for k, v in r.header_list if k == "correlation-id"]
    parents = {v.decode() for r in records for k, v in r.header_list if k == "traceparent"}
    assert {"trace-create-1", "trace-like-1", minted} <= set(ids)
    assert parents == {CREATE_PARENT, LIKE_PARENT}

    # One id finds the call's log lines (at info, a rejected call logs one), with the
    # trace id of its traceparent.
    with pytest.raises(grpc.RpcError) as missing:
        commands.LikePost(
            cmd.LikePostRequest(post_id="00000000-0000-4000-8000-000000000000"),
            metadata=traced("bob", "trace-missing-1", LIKE_PARENT),
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    lines = wait_until(
        lambda: log_lines(log_dir / "command.log", "trace-missing-1"),
        timeout=10,
        what="the rejected call's log line",
    )
    assert [line["event"] for line in lines] == ["rpc_rejected"]
    assert (lines[0]["correlation_id"], lines[0]["trace_id"]) == (
        "trace-missing-1",
        LIKE_PARENT[3:35],
    )
