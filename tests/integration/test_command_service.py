"""Command service against a real broker and a real gRPC server on a free port. A
broker outage and a stop in the middle of a burst are in
tests/system/test_command_service_faults.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from command_service.server import CommandServer
from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET, PROJECT_ROOT, Settings
from mysocial.consistency import ConsistencyToken
from mysocial.kafka.partitioning import partition_for
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from tests.support.helpers import (
    Metadata,
    auth,
    events,
)


def test_each_rpc_writes_exactly_its_event(
    settings: Settings, command_channel: grpc.Channel
) -> None:
    stub = cmd_grpc.CommandServiceStub(command_channel)
    alice, bob = auth("alice"), auth("bob")
    cid: Metadata = (("x-correlation-id", "corr-123"),)

    created = stub.CreatePost(
        cmd.CreatePostRequest(caption="sunset", request_id="r1"), metadata=alice + cid
    )
    post_id = created.post_id
    liked = stub.LikePost(cmd.LikePostRequest(post_id=post_id), metadata=bob)
    unliked = stub.UnlikePost(cmd.UnlikePostRequest(post_id=post_id), metadata=bob)
    commented = stub.AddComment(cmd.AddCommentRequest(post_id=post_id, text="wow"), metadata=bob)
    uncommented = stub.DeleteComment(
        cmd.DeleteCommentRequest(post_id=post_id, comment_id=commented.comment_id), metadata=bob
    )
    deleted = stub.DeletePost(cmd.DeletePostRequest(post_id=post_id), metadata=alice)

    posts = events(settings, "posts")
    likes = events(settings, "likes")
    comments = events(settings, "comments")
    assert [e.WhichOneof("payload") for _, e in posts] == ["post_created", "post_deleted"]
    assert [e.WhichOneof("payload") for _, e in likes] == ["post_liked", "post_unliked"]
    assert [e.WhichOneof("payload") for _, e in comments] == ["comment_added", "comment_deleted"]

    rec, e = posts[0]
    assert rec.key == b"alice"
    assert rec.partition == partition_for(b"alice", settings.posts_partitions)
    assert rec.headers["event-type"] == b"PostCreated"
    assert rec.headers["correlation-id"] == b"corr-123"
    assert e.actor_user_id == "alice"
    assert e.post_created.post_id == post_id and e.post_created.caption == "sunset"
    assert e.occurred_at.seconds > 0 and e.event_id
    assert posts[1][1].post_deleted.post_id == post_id
    assert posts[1][1].actor_user_id == "alice"

    for rec, e in likes + comments:
        assert rec.key == post_id.encode()
        assert rec.partition == partition_for(post_id.encode(), settings.copartitions)
        assert e.actor_user_id == "bob"
        assert len(rec.headers["correlation-id"]) > 0
    assert likes[0][0].headers["event-type"] == b"PostLiked"
    assert likes[1][0].headers["event-type"] == b"PostUnliked"
    assert comments[0][1].comment_added.text == "wow"
    assert comments[0][1].comment_added.comment_id == commented.comment_id
    assert comments[1][1].comment_deleted.comment_id == commented.comment_id
    assert len({e.event_id for _, e in posts + likes + comments}) == 6

    # Each consistency token names exactly the record that was written.
    for response, (rec, _) in [
        (created, posts[0]),
        (deleted, posts[1]),
        (liked, likes[0]),
        (unliked, likes[1]),
        (commented, comments[0]),
        (uncommented, comments[1]),
    ]:
        token = ConsistencyToken.decode(response.consistency_token)  # type: ignore[attr-defined]
        assert (token.topic, token.partition, token.offset) == (
            rec.topic,
            rec.partition,
            rec.offset,
        )
        assert token.post_id == post_id


def test_retries_with_the_same_request_id_yield_the_same_ids(
    settings: Settings, command_channel: grpc.Channel
) -> None:
    stub = cmd_grpc.CommandServiceStub(command_channel)
    a = stub.CreatePost(
        cmd.CreatePostRequest(caption="x", request_id="same"), metadata=auth("alice")
    )
    b = stub.CreatePost(
        cmd.CreatePostRequest(caption="x", request_id="same"), metadata=auth("alice")
    )
    c = stub.CreatePost(
        cmd.CreatePostRequest(caption="x", request_id="same"), metadata=auth("carol")
    )
    d = stub.CreatePost(cmd.CreatePostRequest(caption="x"), metadata=auth("alice"))
    assert a.post_id == b.post_id
    assert c.post_id != a.post_id and d.post_id != a.post_id
    c1 = stub.AddComment(
        cmd.AddCommentRequest(post_id=a.post_id, text="hi", request_id="k"), metadata=auth("bob")
    )
    c2 = stub.AddComment(
        cmd.AddCommentRequest(post_id=a.post_id, text="hi", request_id="k"), metadata=auth("bob")
    )
    c3 = stub.AddComment(cmd.AddCommentRequest(post_id=a.post_id, text="hi"), metadata=auth("bob"))
    assert c1.comment_id == c2.comment_id != c3.comment_id
    # Retried events carry the same event id, so consumers can recognise the repeat.
    created = [e for _, e in events(settings, "posts") if e.post_created.post_id == a.post_id]
    assert len(created) == 2 and created[0].event_id == created[1].event_id


def test_missing_invalid_or_expired_token_is_unauthenticated(
    settings: Settings, command_channel: grpc.Channel
) -> None:
    stub = cmd_grpc.CommandServiceStub(command_channel)
    req = cmd.CreatePostRequest(caption="nope")
    expired = mint_token("alice", DEV_JWT_SECRET, ttl_s=60, now=time.time() - 3600)
    forged = mint_token("alice", "another-secret-that-is-long-enough-for-hs256")
    cases: dict[str, Metadata] = {
        "missing": (),
        "not bearer": (("authorization", "Basic YWxpY2U6cHc="),),
        "garbage": (("authorization", "Bearer not.a.jwt"),),
        "forged": (("authorization", f"Bearer {forged}"),),
        "expired": (("authorization", f"Bearer {expired}"),),
    }
    for name, md in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.CreatePost(req, metadata=md)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert "Traceback" not in (info.value.details() or "")
    assert events(settings, "posts") == []


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [
        ("LikePost", cmd.LikePostRequest(post_id=""), "post_id"),
        ("LikePost", cmd.LikePostRequest(post_id="not-a-uuid"), "post_id"),
        ("UnlikePost", cmd.UnlikePostRequest(post_id="1234"), "post_id"),
        ("DeletePost", cmd.DeletePostRequest(post_id=""), "post_id"),
        ("CreatePost", cmd.CreatePostRequest(caption="x" * 2201), "caption"),
        ("CreatePost", cmd.CreatePostRequest(caption="ok", request_id="r" * 129), "request_id"),
        ("CreatePost", cmd.CreatePostRequest(caption="ok", media_ids=["nope"]), "media_ids[0]"),
        ("CreatePost", cmd.CreatePostRequest(caption="ok", media_ids=["a" * 64] * 11), "media_ids"),
        ("CreatePost", cmd.CreatePostRequest(caption="bell\x07"), "caption"),
        ("AddComment", cmd.AddCommentRequest(post_id=str(uuid.uuid4()), text="  "), "text"),
        ("AddComment", cmd.AddCommentRequest(post_id=str(uuid.uuid4()), text="y" * 1001), "text"),
        (
            "DeleteComment",
            cmd.DeleteCommentRequest(post_id=str(uuid.uuid4()), comment_id="c"),
            "comment_id",
        ),
    ],
)
def test_invalid_input_is_rejected_precisely_and_writes_nothing(
    settings: Settings, command_channel: grpc.Channel, rpc: str, request_: object, field: str
) -> None:
    stub = cmd_grpc.CommandServiceStub(command_channel)
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request_, metadata=auth("alice"))
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field.split("[")[0] in (err.details() or "")
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [v.field for v in bad.field_violations]
    assert violations == [field]
    for topic in ("posts", "likes", "comments"):
        assert events(settings, topic) == []


def test_health_and_reflection(
    command_server: CommandServer, command_channel: grpc.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(command_channel)
    for service in ("", "mysocial.v1.CommandService"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))  # type: ignore[attr-defined]
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    db = ProtoReflectionDescriptorDatabase(command_channel)
    assert "mysocial.v1.CommandService" in db.get_services()
    from google.protobuf.descriptor_pool import DescriptorPool

    pool = DescriptorPool(db)
    descriptor = pool.FindServiceByName("mysocial.v1.CommandService")
    assert {m.name for m in descriptor.methods} >= {
        "CreatePost",
        "DeletePost",
        "LikePost",
        "UnlikePost",
        "AddComment",
        "DeleteComment",
    }


def grpcurl_path() -> str:
    path = PROJECT_ROOT / ".cache" / "bin" / "grpcurl"
    found = str(path) if path.exists() else shutil.which("grpcurl")
    assert found, "grpcurl missing: `make tools` installs it"
    return found


def test_grpcurl_creates_a_post_without_proto_files(
    settings: Settings, command_server: CommandServer
) -> None:
    token = mint_token("grace", DEV_JWT_SECRET)
    addr = f"127.0.0.1:{command_server.port}"
    listed = subprocess.run(
        [grpcurl_path(), "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert "mysocial.v1.CommandService" in listed.stdout.split()
    out = subprocess.run(
        [
            grpcurl_path(),
            "-plaintext",
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            json.dumps({"caption": "from grpcurl", "requestId": "g1"}),
            addr,
            "mysocial.v1.CommandService/CreatePost",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    post_id = json.loads(out.stdout).get("postId") or json.loads(out.stdout).get("post_id")
    assert post_id, out.stdout
    posts = events(settings, "posts")
    assert [e.post_created.post_id for _, e in posts] == [post_id]
    assert posts[0][1].actor_user_id == "grace"
