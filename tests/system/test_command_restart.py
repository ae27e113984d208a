"""The command service's directory on disk: a restart reads on from the offsets its
store holds (warm: only what arrived meanwhile is replayed) and still knows every post
and comment; with the folder deleted, or for topics created again, it is rebuilt
(cold): from posts_with_counts and `posts` after the processor's progress when the
processor has made some, else from the beginning of `posts`. Two processes on one host
take folders of their own."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import grpc

from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from processor.audit import wait_caught_up
from tests.support.helpers import auth, make_settings
from tests.support.services import System, command_service_on_free_port


def _loads(log: Path, event: str = "directory_loaded") -> list[dict[str, str]]:
    """The `event` lines of a command service log, oldest first."""
    out = []
    for line in log.read_text().splitlines():
        if event in line:
            out.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    return out


def test_a_restart_replays_only_what_is_new_and_forgets_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap, processor_state_dir=str(tmp_path / "state"), log_level="info"
    )
    provision(settings)
    log = tmp_path / "command.log"
    first = command_service_on_free_port(settings, log)
    second = command_service_on_free_port(settings, tmp_path / "second.log")
    try:
        first.start()
        stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(first.addr))
        posts = [
            stub.CreatePost(
                cmd.CreatePostRequest(caption=f"p{i}"), metadata=auth(f"a{i % 3}")
            ).post_id
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
    finally:
        second.stop()
        first.stop()


def _code(call: Callable[[], object]) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_cold_start_reads_the_projection_not_the_posts_history(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, processor_state_dir=str(tmp_path / "state"))
    provision(settings)
    (tmp_path / "logs").mkdir()
    with System(settings, tmp_path / "logs") as system:
        stub = system.commands()
        posts = [
            stub.CreatePost(cmd.CreatePostRequest(caption=f"p{i}"), metadata=auth(f"a{i % 3}"))
            for i in range(40)
        ]
        for i in range(10):  # deleted: tombstones in posts_with_counts
            stub.DeletePost(
                cmd.DeletePostRequest(post_id=posts[i].post_id), metadata=auth(f"a{i % 3}")
            )
        assert wait_caught_up(system.settings, 60)

        # A new worker (a folder of its own): cold, from the snapshot.
        log = tmp_path / "fresh.log"
        fresh = command_service_on_free_port(
            system.settings.with_(command_state_dir=str(tmp_path / "fresh")), log
        )
        try:
            fresh.start()
            other = cmd_grpc.CommandServiceStub(grpc.insecure_channel(fresh.addr))
            snapshot = _loads(log, "directory_snapshot_loaded")[-1]
            loaded = _loads(log)[-1]
            assert loaded["start"] == "cold", loaded
            # 40 posts, 10 of them tombstoned (compaction may have dropped older records).
            assert 30 <= int(snapshot["records"]) <= 50, snapshot
            # Nothing of `posts` replayed: the processor had applied all of it.
            assert int(loaded["replayed_records"]) == 0, loaded

            def like(i: int, user: str = "fan") -> grpc.StatusCode | None:
                request = cmd.LikePostRequest(post_id=posts[i].post_id)
                return _code(lambda: other.LikePost(request, metadata=auth(user)))

            assert like(0) == grpc.StatusCode.NOT_FOUND  # deleted before the snapshot
            assert like(10) == grpc.StatusCode.OK
            # The authors came from the projection.
            delete = cmd.DeletePostRequest(post_id=posts[11].post_id)
            assert _code(lambda: other.DeletePost(delete, metadata=auth("a0"))) == (
                grpc.StatusCode.PERMISSION_DENIED
            )
            assert _code(lambda: other.DeletePost(delete, metadata=auth("a2"))) == (
                grpc.StatusCode.OK
            )
            # What the other worker writes next arrives through `posts`.
            new = stub.CreatePost(cmd.CreatePostRequest(caption="new"), metadata=auth("b"))
            assert like(-1) == grpc.StatusCode.OK
            request = cmd.LikePostRequest(post_id=new.post_id)
            other.LikePost(request, metadata=auth("fan"))
            stub.DeletePost(cmd.DeletePostRequest(post_id=posts[12].post_id), metadata=auth("a0"))
            fresh.stop()

            # Restarted warm: it reads `posts` on from the snapshot's offsets.
            fresh.start()
            other = cmd_grpc.CommandServiceStub(grpc.insecure_channel(fresh.addr))
            assert _loads(log)[-1]["start"] == "warm"
            assert like(12) == grpc.StatusCode.NOT_FOUND
            assert like(13, "fan2") == grpc.StatusCode.OK
        finally:
            fresh.stop()
