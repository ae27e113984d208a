"""Processor invariants against the real broker: exact counts, exactly once, crashes,
scale-out, poison records. The command service and the processor run as real
processes; the workload's own model is the ground truth, and the audit command must
agree with it."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer

from command_service import commands
from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka.reader import latest_by_key, read_topic
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from processor.audit import audit, settle, wait_caught_up
from tests.conftest import make_settings
from tests.support.helpers import auth, free_port, kafka_partition, python_env, service_process
from tests.support.workload import Model, Workload


class ProcessorProc:
    """A `python -m processor` child process that tests can kill and restart."""

    def __init__(self, settings: Settings, instance: str, log_dir: Path) -> None:
        self.settings = settings.with_(processor_instance_id=instance, log_level="info")
        self.log_path = log_dir / f"processor-{instance}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor"],
                env=python_env(self.settings),
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def terminate(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def proc_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    s = make_settings(
        kafka_bootstrap,
        processor_state_dir=str(tmp_path / "state"),
        processor_session_timeout_ms=6000,
        processor_transaction_timeout_ms=10000,
        processor_commit_interval_ms=100,
    )
    provision(s)
    return s


@contextmanager
def command_service(settings: Settings, log_dir: Path) -> Iterator[str]:
    port = free_port()
    s = settings.with_(command_addr=f"127.0.0.1:{port}", command_workers=1)
    with service_process("command_service", s, log_dir / "command.log") as proc:
        channel = grpc.insecure_channel(s.command_addr)
        grpc.channel_ready_future(channel).result(timeout=30)
        channel.close()
        yield s.command_addr
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def check_exact(settings: Settings, model: Model) -> None:
    assert settle(settings, 120), "processor did not catch up"
    table = latest_by_key(settings.bootstrap, settings.topic("posts_with_counts"))
    problems = model.diff(table)
    assert problems == [], f"{len(problems)} posts differ from the model: {problems[:10]}"
    report = audit(settings)
    assert report.ok, report.mismatches[:10] + report.trending_mismatches[:10]
    assert report.live_posts == sum(1 for p in model.posts.values() if not p.deleted)


def run_audit_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", "audit", "--wait", "60"],
        env=python_env(settings),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_randomized_workload_is_counted_exactly(proc_settings: Settings, log_dir: Path) -> None:
    processor = ProcessorProc(proc_settings, "a", log_dir)
    processor.start()
    try:
        with command_service(proc_settings, log_dir) as addr:
            workload = Workload(addr, seed=7, users=60)
            model = asyncio.run(workload.run(20_000))
            assert workload.errors == []
        assert workload.sent >= 20_000
        for op in (
            "like",
            "unlike",
            "comment",
            "delete_comment",
            "delete_post",
            "create_retry",
            "comment_retry",
            "delete_comment_unauthorized",
            "delete_post_unauthorized",
            "rejected_PERMISSION_DENIED",
        ):
            assert model.ops.get(op, 0) > 0, f"workload never did {op}: {model.ops}"
        check_exact(proc_settings, model)
        cli = run_audit_cli(proc_settings)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "mismatches: 0" in cli.stdout and "OK" in cli.stdout
    finally:
        assert processor.terminate() == 0


def test_exact_after_repeated_sigkill(proc_settings: Settings, log_dir: Path) -> None:
    processor = ProcessorProc(proc_settings, "a", log_dir)
    processor.start()
    total = 20_000
    kill_at = sorted({int(total * f) for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)})
    rng = random.Random(11)
    progress = {"sent": 0}
    stop = threading.Event()

    def killer() -> None:
        for mark in kill_at:
            while progress["sent"] < mark and not stop.is_set():
                time.sleep(0.01)
            if stop.is_set():
                return
            time.sleep(rng.random() * 0.3)  # a random moment within the commit cycle
            processor.kill()
            processor.start()

    thread = threading.Thread(target=killer)
    try:
        with command_service(proc_settings, log_dir) as addr:
            thread.start()
            workload = Workload(addr, seed=13, users=60)
            model = asyncio.run(workload.run(total, lambda n: progress.__setitem__("sent", n)))
            thread.join(60)
            assert workload.errors == []
        assert processor.kills >= 5
        check_exact(proc_settings, model)
    finally:
        stop.set()
        processor.terminate()


def test_scale_out_and_kill_one_instance(proc_settings: Settings, log_dir: Path) -> None:
    first = ProcessorProc(proc_settings, "a", log_dir)
    second = ProcessorProc(proc_settings, "b", log_dir)
    first.start()
    progress = {"sent": 0}
    try:
        with command_service(proc_settings, log_dir) as addr:
            workload = Workload(addr, seed=21, users=60)

            def conductor() -> None:
                while progress["sent"] < 5000:
                    time.sleep(0.01)
                second.start()  # joins mid-stream: partitions are split
                while progress["sent"] < 12000:
                    time.sleep(0.01)
                first.kill()  # leaves without notice: the other takes over

            thread = threading.Thread(target=conductor)
            thread.start()
            model = asyncio.run(workload.run(20_000, lambda n: progress.__setitem__("sent", n)))
            thread.join(60)
            assert workload.errors == []
        assert first.kills == 1 and second.alive()
        check_exact(proc_settings, model)
        assert "partitions_assigned" in second.log_path.read_text()
    finally:
        first.terminate()
        second.terminate()


@pytest.mark.parametrize("core", ["native", "python"])
def test_poison_records_go_to_the_dead_letter_topic_once(
    proc_settings: Settings, log_dir: Path, core: str
) -> None:
    """Both cores (compiled and the Python rules) dead-letter the same records and
    ignore the same forged events, end to end."""
    s = proc_settings.with_(processor_core=core)
    processor = ProcessorProc(s, "a", log_dir)
    processor.start()
    try:
        with command_service(s, log_dir) as addr:
            stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(addr))
            post = stub.CreatePost(cmd.CreatePostRequest(caption="target"), metadata=auth("alice"))
            pid = post.post_id
            producer = Producer({"bootstrap.servers": s.bootstrap, "partitioner": "murmur2_random"})
            poison = [b"\xff\xfe not protobuf", b"\x0a\xff\xff\xff", b""]
            for value in poison:
                producer.produce(s.topic("likes"), value, pid.encode())
            # Valid protobuf but on the wrong partition for its post: misrouted.
            wrong = (kafka_partition(pid, s.copartitions) + 1) % s.copartitions
            liked = commands.like_post(
                "mallory", cmd.LikePostRequest(post_id=pid), datetime.now(UTC)
            )
            producer.produce(
                s.topic("likes"), liked.event.SerializeToString(), pid.encode(), partition=wrong
            )
            producer.flush(10)
            for i in range(5):
                stub.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"fan{i}"))
            # Valid events the command service would refuse, written straight to Kafka:
            # the processor must ignore them too (defence in depth).
            comment = stub.AddComment(
                cmd.AddCommentRequest(post_id=pid, text="mine"), metadata=auth("bob")
            )
            now = datetime.now(UTC)
            forged = [
                commands.delete_post("mallory", cmd.DeletePostRequest(post_id=pid), now),
                commands.delete_comment(
                    "mallory",
                    cmd.DeleteCommentRequest(post_id=pid, comment_id=comment.comment_id),
                    now,
                ),
            ]
            for event in forged:
                producer.produce(
                    s.topic(event.topic), event.event.SerializeToString(), event.key.encode()
                )
            producer.flush(10)
        assert wait_caught_up(s, 60)
        dead = read_topic(s.bootstrap, s.topic("mysocial.dead-letter"))
        assert len(dead) == len(poison) + 1
        by_value = {d.value or b"": d for d in dead}
        for value in poison:
            rec = by_value[value]
            assert rec.headers["source-topic"] == s.topic("likes").encode()
            assert int(rec.headers["source-offset"]) >= 0
            assert rec.headers["reason"]
        reasons = sorted(d.headers["reason"].decode() for d in dead)
        assert any("misrouted" in r for r in reasons), reasons
        assert any("undecodable" in r or "payload" in r for r in reasons), reasons
        table = latest_by_key(s.bootstrap, s.topic("posts_with_counts"))
        got = ev.PostWithCounts()
        got.ParseFromString(table[pid.encode()] or b"")
        assert got.post.like_count == 5 and got.post.comment_count == 1
        assert audit(s).ok
    finally:
        processor.terminate()


def test_processor_exits_cleanly_on_sigterm(proc_settings: Settings, log_dir: Path) -> None:
    processor = ProcessorProc(proc_settings, "a", log_dir)
    processor.start()
    deadline = time.monotonic() + 60
    while "partitions_assigned" not in processor.log_path.read_text():
        assert time.monotonic() < deadline and processor.alive()
        time.sleep(0.05)
    assert processor.terminate() == 0
    assert "processor_stopped" in processor.log_path.read_text()
