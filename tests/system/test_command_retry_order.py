"""A like/unlike that timed out in one command-service process and was retried in
another must end as the user's last acknowledged action.

The hazard: the first attempt stays queued in the first process's librdkafka after
the client saw it fail; the client retries it elsewhere and moves on; the stale copy
is written last and undoes the user's later action. Here for real: two command-service
processes A and B, a stalled broker (SIGSTOP) so A's attempt stays queued behind
others, a short deadline, A frozen (SIGSTOP: as slow to send as a process in a long
pause or a reconnect backoff) while the broker resumes and the user retries the unlike
through B and then likes again, then A thawed. The final count must be the like.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mysocial import ids
from mysocial.kafka import topics
from mysocial.kafka.broker import EmbeddedBroker
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.reader import latest_by_key
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from processor.audit import audit, settle
from tests.support.faults import own_broker, pause, paused, resume
from tests.support.helpers import auth, events, free_ports, processor_settings
from tests.support.services import ProcessorProc, Service

DEADLINE_S = 2.0  # the client's deadline per attempt: "a short deadline"
INDETERMINATE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with own_broker(tmp_path / "kafka") as b:
        yield b


def until_ok(call: Any, request: object, user: str) -> Any:
    """Send until answered OK, retrying indeterminate failures (as a client must)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(request, metadata=auth(user), timeout=DEADLINE_S)
        except grpc.RpcError as exc:
            assert exc.code() in INDETERMINATE, exc
            assert time.monotonic() < deadline, f"no answer for {request}"


def post_on_partition(
    stub: cmd_grpc.CommandServiceStub, author: str, partition: int, n: int
) -> str:
    """Create a post whose likes land on `partition` (ids derive from the request id)."""
    for i in range(1000):
        rid = f"same-partition-{i}"
        post_id = ids.derive_id("post", author, rid)
        if partition_for(post_id.encode(), n) == partition:
            request = cmd.CreatePostRequest(caption="neighbour", request_id=rid)
            until_ok(stub.CreatePost, request, author)
            return post_id
    raise AssertionError("no post id on that partition")


def test_a_retried_unlike_is_not_undone_by_its_stale_first_attempt(
    broker: EmbeddedBroker, tmp_path: Path, log_dir: Path
) -> None:
    settings = processor_settings(broker.bootstrap, tmp_path / "state", log_level="info")
    processor = ProcessorProc(settings, "a", log_dir)
    port_a, port_b = free_ports(2)
    procs = {}
    for name, port in (("a", port_a), ("b", port_b)):
        s = settings.with_(command_addr=f"127.0.0.1:{port}", command_workers=1)
        procs[name] = Service(
            "command_service",
            s,
            s.command_addr,
            log_dir / f"command-{name}.log",
            "mysocial.v1.CommandService",
        )
    processor.start()
    try:
        for service in procs.values():
            service.start()
        a_channel = grpc.insecure_channel(procs["a"].addr)
        b_channel = grpc.insecure_channel(procs["b"].addr)
        a, b = cmd_grpc.CommandServiceStub(a_channel), cmd_grpc.CommandServiceStub(b_channel)
        post = until_ok(b.CreatePost, cmd.CreatePostRequest(caption="p", request_id="p"), "author")
        pid = post.post_id
        partition = partition_for(pid.encode(), settings.copartitions)
        # The fillers' and the barrier's likes share the victim's partition (one queue
        # in A's producer) but count on another post.
        neighbour = post_on_partition(b, "author", partition, settings.copartitions)
        like = cmd.LikePostRequest(post_id=pid, request_id="like-1")
        until_ok(a.LikePost, like, "victim")  # acknowledged: liked

        unlike = cmd.UnlikePostRequest(post_id=pid, request_id="unlike-1")
        with paused(broker.proc):
            # Requests to a stalled broker pile up: the first ones are in flight (the
            # broker already holds their bytes), the later ones wait in A's queue.
            fillers = []
            for i in range(4):
                request = cmd.LikePostRequest(post_id=neighbour, request_id=f"filler-{i}")
                fillers.append(
                    a.LikePost.future(request, metadata=auth(f"filler{i}"), timeout=DEADLINE_S)
                )
                time.sleep(0.06)  # spacing: separate produce requests
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as failed:
                a.UnlikePost(unlike, metadata=auth("victim"), timeout=DEADLINE_S)
            first_attempt_s = time.monotonic() - started
            for f in fillers:
                assert f.exception(10) is not None
            pause(procs["a"].proc)  # A keeps whatever it still holds, for now
        try:
            until_ok(b.UnlikePost, unlike, "victim")  # the retry, through B: unliked
            relike = cmd.LikePostRequest(post_id=pid, request_id="like-2")
            until_ok(b.LikePost, relike, "victim")  # the last acknowledged action
        finally:
            resume(procs["a"].proc)
        # A barrier on the same partition through A's same producer: anything A still
        # held for that partition is written before it is acknowledged.
        barrier = cmd.LikePostRequest(post_id=neighbour, request_id="barrier")
        until_ok(a.LikePost, barrier, "barrier")
        a_channel.close()
        b_channel.close()

        assert settle(settings, 60), "processor did not catch up"
        mine = [
            e.WhichOneof("payload")
            for _, e in events(settings, topics.LIKES)
            if e.actor_user_id == "victim" and e.WhichOneof("payload")
        ]
        assert mine[-1] == "post_liked", f"the victim's events in log order: {mine}"
        table = latest_by_key(settings, settings.topic(topics.POSTS_WITH_COUNTS))
        raw = table[pid.encode()]
        assert raw is not None
        assert ev.PostWithCounts.FromString(raw).post.like_count == 1
        report = audit(settings)
        assert report.ok, report.mismatches[:5]
        # Determinate: the record was given up for good before the answer.
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
        assert first_attempt_s < DEADLINE_S
        print(
            f"\nfirst attempt failed {failed.value.code().name} after {first_attempt_s:.2f}s; "
            f"the victim's events in log order: {mine}"
        )
    finally:
        for service in procs.values():
            resume(service.proc)
            service.stop()
        processor.terminate()
