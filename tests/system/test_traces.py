"""Traces end to end: a command's correlation id and W3C traceparent reach its event,
the posts_with_counts record that includes it, the Watch streams and the log lines of
the call (real broker, processor, command and query processes)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Collector:
    """A minimal OTLP/HTTP traces receiver: keeps every span it is sent, with the
    service.name of the process that sent it."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsp

        self.spans: list[tuple[str, Any]] = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = tsp.ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attrs = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        spans.extend((attrs["service.name"], span) for span in scope.spans)
                reply = tsp.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, service: str, name_part: str) -> list[Any]:
        return [span for svc, span in list(self.spans) if svc == service and name_part in span.name]


def test_spans_are_exported_to_an_otlp_collector_when_asked(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path
) -> None:
    collector = Collector()
    settings = make_settings(
        kafka_bootstrap,
        processor_state_dir=str(tmp_path / "state"),
        otlp_endpoint=collector.endpoint,
    )
    provision(settings)
    trace_id = bytes.fromhex(LIKE_PARENT[3:35])
    try:
        with System(settings, log_dir) as system:
            commands, queries = system.commands(), system.queries()
            post = commands.CreatePost(cmd.CreatePostRequest(caption="spans"), metadata=auth("al"))
            watch = StreamReader(
                queries.WatchPosts(
                    q.WatchPostsRequest(
                        post_ids=[post.post_id], consistency_token=post.consistency_token
                    )
                )
            )
            try:
                wait_until(lambda: watch.messages, timeout=30, what="the snapshot")
                commands.LikePost(
                    cmd.LikePostRequest(post_id=post.post_id),
                    metadata=traced("bob", "span-like-1", LIKE_PARENT),
                )

                def like_span() -> Any:
                    for span in collector.of("mysocial-command", "/LikePost"):
                        if span.trace_id == trace_id:
                            return span
                    return None

                rpc = wait_until(like_span, timeout=30, what="the LikePost span")
                # The command span is the child of the caller's; the event carries the
                # command span's own traceparent, which the commit and delivery link.
                assert rpc.parent_span_id == bytes.fromhex(LIKE_PARENT[36:52])
                assert rpc.kind == 2  # SERVER

                def linked(service: str, name_part: str) -> Any:
                    for span in collector.of(service, name_part):
                        if any(
                            (link.trace_id, link.span_id) == (trace_id, rpc.span_id)
                            for link in span.links
                        ):
                            return span
                    return None

                commit = wait_until(
                    lambda: linked("mysocial-processor", "processor commit"),
                    timeout=30,
                    what="a processor commit span linked to the like",
                )
                assert {a.key: a.value.string_value for a in commit.attributes}["outcome"] == (
                    "committed"
                )
                wait_until(
                    lambda: linked("mysocial-query", "WatchPosts deliver"),
                    timeout=30,
                    what="a stream delivery span linked to the like",
                )
                assert watch.error is None
            finally:
                watch.close()
    finally:
        collector.close()
