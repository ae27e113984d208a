"""The command service under faults: its broker stopped and started again, and a stop
(SIGTERM, or Ctrl-C to the process group) in the middle of a burst of likes."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from bench.restart import load
from command_service.server import CommandServer
from mysocial.config import Settings
from mysocial.kafka.broker import EmbeddedBroker
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from tests.support.helpers import (
    LoopThread,
    auth,
    events,
    free_port,
    make_settings,
    service_process,
    wait_until,
)


def test_broker_down_gives_unavailable_then_recovers(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    broker = EmbeddedBroker(free_port(pair=True), tmp_path / "kafka")
    broker.start()
    try:
        settings = make_settings(broker.bootstrap)
        provision(settings)
        server = loop_thread.run(CommandServer.start(settings, "127.0.0.1:0"))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = cmd_grpc.CommandServiceStub(channel)
                post = stub.CreatePost(cmd.CreatePostRequest(caption="before"), metadata=auth("al"))
                broker.stop()
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    stub.LikePost(
                        cmd.LikePostRequest(post_id=post.post_id), metadata=auth("bo"), timeout=3
                    )
                elapsed = time.monotonic() - started
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
                assert elapsed < 3.0
                broker.start()

                def like_works() -> bool:
                    try:
                        stub.LikePost(
                            cmd.LikePostRequest(post_id=post.post_id),
                            metadata=auth("cy"),
                            timeout=5,
                        )
                        return True
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        return False

                wait_until(like_works, timeout=60, interval=0.5, what="command service to recover")
            assert any(e.actor_user_id == "cy" for _, e in events(settings, "likes"))
        finally:
            loop_thread.run(server.stop(1.0))
    finally:
        broker.stop()


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stop_during_burst_loses_no_acknowledged_event(
    settings: Settings, log_dir: Path, how: str
) -> None:
    """SIGTERM to the service, or Ctrl-C in a terminal: SIGINT to the whole process
    group, after which the parent also sends its workers SIGTERM (a second signal
    that must not cut their drain short)."""
    port = free_port()
    s = settings.with_(
        command_addr=f"127.0.0.1:{port}", command_workers=2, grace_period_s=10.0, log_level="info"
    )
    log_path = log_dir / "command.log"
    with service_process("command_service", s, log_path, new_session=True) as proc:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = cmd_grpc.CommandServiceStub(channel)
        post_id = stub.CreatePost(
            cmd.CreatePostRequest(caption="burst"), metadata=auth("author"), timeout=30
        ).post_id
        acked: list[str] = []
        errors: list[grpc.StatusCode] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(n: int) -> None:
            md = auth(f"user{n}")
            i = 0
            while not stop.is_set():
                rid = f"{n}-{i}"
                i += 1
                try:
                    stub.LikePost(
                        cmd.LikePostRequest(post_id=post_id, request_id=rid),
                        metadata=md,
                        timeout=10,
                    )
                    with lock:
                        acked.append(rid)
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(exc.code())
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        return

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client, n) for n in range(16)]
            wait_until(lambda: len(acked) > 200, timeout=60, what="burst under way")
            if how == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
                # A supervisor (make run) follows up with SIGTERM; the parent passes it
                # on to workers that are already draining.
                wait_until(
                    lambda: log_path.read_text().count("shutdown_requested") >= 2,
                    timeout=30,
                    what="both workers shutting down",
                )
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            stop.set()
            for f in futures:
                f.result()
        channel.close()
        assert proc.returncode == 0
    # Both workers drained and flushed their producer (none was killed mid-way).
    assert log_path.read_text().count("command_service_stopped") == 2
    assert len(acked) > 200
    written = {e.event_id for _, e in events(settings, "likes")}
    from command_service.commands import event_id_for  # same derivation as the service

    missing = [
        rid
        for rid in acked
        if event_id_for("like", f"user{rid.split('-')[0]}", rid, post_id) not in written
    ]
    assert missing == [], f"{len(missing)} acknowledged likes not in Kafka"


def test_ctrl_c_while_the_directory_loads_ends_the_start_up_cleanly(
    settings: Settings, log_dir: Path
) -> None:
    """A stop signal before the worker serves (its directory still loading) cancels the
    start-up: one shutdown_requested line, exit 0, no traceback. CI caught a worker
    that got Ctrl-C there and died without a word."""
    loaded = load(settings, 60_000)  # ~240,000 directory records: seconds to load
    s = settings.with_(command_addr=f"127.0.0.1:{free_port()}", log_level="info")
    log_path = log_dir / "command.log"
    with service_process("command_service", s, log_path) as proc:
        wait_until(lambda: "directory_rebuilding" in log_path.read_text(), 60, what="loading")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert "shutdown_requested" in log and "during=start-up" in log, log[-3000:]
    assert "directory_loaded" not in log, f"the load ({loaded}) ended before the signal"
    assert "Traceback" not in log
