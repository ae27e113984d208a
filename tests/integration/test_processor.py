"""Processor invariants against the real broker: exact counts, exactly once, poison
records, a clean stop. The command service and the processor run as real processes;
the workload's own model is the ground truth, and the audit command must agree with
it. Crashes and scale-out are in tests/system/test_processor_faults.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Producer

from command_service import commands
from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.reader import latest_by_key, read_topic
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from processor.audit import audit, wait_caught_up
from tests.support.helpers import auth, python_env
from tests.support.services import ProcessorProc, command_service
from tests.support.workload import Workload, check_exact


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
            producer = Producer(kafka_connection(s).config({"partitioner": "murmur2_random"}))
            poison = [b"\xff\xfe not protobuf", b"\x0a\xff\xff\xff", b""]
            for value in poison:
                producer.produce(s.topic("likes"), value, pid.encode())
            # Valid protobuf but on the wrong partition for its post: misrouted.
            wrong = (partition_for(pid.encode(), s.copartitions) + 1) % s.copartitions
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
        dead = read_topic(s, s.topic("mysocial.dead-letter"))
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
        table = latest_by_key(s, s.topic("posts_with_counts"))
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
