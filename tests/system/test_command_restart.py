"""The command service's directory on disk: a restart reads on from the offsets its
store holds (warm: only what arrived meanwhile is replayed) and still knows every post
and comment; with the folder deleted, or for topics created again, it is rebuilt from
the beginning (cold). Two processes on one host take folders of their own."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import grpc

from mysocial.config import Settings
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from tests.support.helpers import auth, free_port, make_settings
from tests.support.services import Service


def _loads(log: Path) -> list[dict[str, str]]:
    """The directory_loaded lines of a command service log, oldest first."""
    out = []
    for line in log.read_text().splitlines():
        if "directory_loaded" in line:
            out.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    return out


def _service(settings: Settings, log: Path) -> Service:
    addr = f"127.0.0.1:{free_port()}"
    return Service(
        "command_service",
        settings.with_(command_addr=addr),
        addr,
        log,
        "mysocial.v1.CommandService",
    )


def test_a_restart_replays_only_what_is_new_and_forgets_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap, processor_state_dir=str(tmp_path / "state"), log_level="info"
    )
    provision(settings)
    log = tmp_path / "command.log"
    first = _service(settings, log)
    first.start()
    stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(first.addr))
    posts = [
        stub.CreatePost(cmd.CreatePostRequest(caption=f"p{i}"), metadata=auth(f"a{i % 3}")).post_id
        for i in range(30)
    ]
    assert first.stop() == 0
    first.start()  # warm: the store has every post and the offsets after them
    stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(first.addr))
    warm = _loads(log)[-1]
    # (the newest records may not have reached the reader before it stopped)
    assert warm["start"] == "warm" and int(warm["replayed_records"]) < 5, warm
    # Every post is known without reading `posts` again; the authors too.
    for post_id in posts[:5]:
        stub.LikePost(cmd.LikePostRequest(post_id=post_id), metadata=auth("fan"))
    with_error = None
    try:
        stub.DeletePost(cmd.DeletePostRequest(post_id=posts[0]), metadata=auth("intruder"))
    except grpc.RpcError as exc:
        with_error = exc.code()
    assert with_error == grpc.StatusCode.PERMISSION_DENIED
    stub.DeletePost(cmd.DeletePostRequest(post_id=posts[0]), metadata=auth("a0"))

    # A second process on the same host takes a folder of its own (cold: it is new).
    second = _service(settings, tmp_path / "second.log")
    second.start()
    other = cmd_grpc.CommandServiceStub(grpc.insecure_channel(second.addr))
    other.LikePost(cmd.LikePostRequest(post_id=posts[1]), metadata=auth("fan2"))
    assert _loads(tmp_path / "second.log")[-1]["start"] == "cold"
    assert second.stop() == 0
    assert first.stop() == 0
    folders = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert folders == [
        f"{settings.topic_namespace}command-0",
        f"{settings.topic_namespace}command-1",
    ]

    # Folder gone: rebuilt from the beginning, with the deletion made before.
    shutil.rmtree(tmp_path / "state" / folders[0])
    first.start()
    stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(first.addr))
    cold = _loads(log)[-1]
    assert cold["start"] == "cold" and int(cold["replayed_records"]) >= len(posts), cold
    try:
        stub.LikePost(cmd.LikePostRequest(post_id=posts[0]), metadata=auth("fan"))
        raise AssertionError("a like on a deleted post was accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    stub.LikePost(cmd.LikePostRequest(post_id=posts[2]), metadata=auth("fan"))
    assert first.stop() == 0
