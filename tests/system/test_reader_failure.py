"""A dead Kafka reader surfaces the same way in both services: one error log line,
health NOT_SERVING, and the process exits non-zero for its supervisor to restart it.

Two triggers, each on both services run as real processes against the real broker:
a decode callback that raises once the service is serving (injected by wrapping the
service's entry point, not by any hook in the services), and a topic the service
reads that does not exist when it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from confluent_kafka import Producer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from tests.support.helpers import free_port, make_settings, python_env
from tests.support.services import SERVING, health

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# `python -m <module>`, with every TailReader's decode callback replaced by one that
# raises: the service starts and serves normally until its reader sees a record.
FAILING_DECODE = """
import runpy, sys
from mysocial.kafka import tail

def failing_decode(msg):
    raise RuntimeError("decode failed (injected by the test)")

init = tail.TailReader.__init__

def patched(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.decode = failing_decode

tail.TailReader.__init__ = patched
runpy.run_module(sys.argv[1], run_name="__main__", alter_sys=True)
"""

# module, address setting, health service name, a topic its reader follows
SERVICES = [
    pytest.param(
        "command_service",
        "command_addr",
        "mysocial.v1.CommandService",
        topics.POSTS,
        id="command_service",
    ),
    pytest.param(
        "query_service",
        "query_addr",
        "mysocial.v1.QueryService",
        topics.POSTS_WITH_COUNTS,
        id="query_service",
    ),
]


def start(settings: Settings, log: Path, *argv: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv],
            env=python_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )


def error_lines(log: Path) -> list[dict[str, Any]]:
    """The error-level lines of a JSON log; a stray traceback fails the test."""
    errors = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            assert "Traceback" not in line, log.read_text()
            continue
        if entry.get("level") == "error":
            errors.append(entry)
    return errors


def service_settings(base: Settings, addr_setting: str, tmp_path: Path) -> Settings:
    return base.with_(
        **{addr_setting: f"127.0.0.1:{free_port()}"},
        command_workers=1,
        log_format="json",
        log_level="info",
        media_dir=str(tmp_path / "media"),
    )


@pytest.mark.parametrize(("module", "addr_setting", "name", "topic"), SERVICES)
def test_a_reader_failure_while_serving_goes_not_serving_and_exits_1(
    settings: Settings,
    tmp_path: Path,
    log_dir: Path,
    module: str,
    addr_setting: str,
    name: str,
    topic: str,
) -> None:
    s = service_settings(settings, addr_setting, tmp_path)
    addr = getattr(s, addr_setting)
    log = log_dir / f"{module}.log"
    proc = start(s, log, "-c", FAILING_DECODE, module)
    try:
        deadline = time.monotonic() + 120
        while health(addr, name) != SERVING:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{module} not SERVING: {log.read_text()}"
            time.sleep(0.05)
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=name)
            stream = stub.Watch(request, timeout=60)  # type: ignore[attr-defined]
            assert next(stream).status == SERVING

            producer = Producer(kafka_connection(s).config())
            producer.produce(s.topic(topic), b"any record", key=b"k")
            assert producer.flush(30) == 0

            assert next(stream).status == NOT_SERVING
        assert proc.wait(60) == 1, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errors = error_lines(log)
    assert [e["event"] for e in errors] == ["kafka_reader_failed"], errors
    assert "decode failed (injected by the test)" in errors[0]["error"]


@pytest.mark.parametrize(("module", "addr_setting", "name", "topic"), SERVICES)
def test_a_missing_topic_at_start_exits_1(
    kafka_bootstrap: str,
    tmp_path: Path,
    log_dir: Path,
    module: str,
    addr_setting: str,
    name: str,
    topic: str,
) -> None:
    # A fresh namespace that was never provisioned: none of its topics exist.
    s = service_settings(make_settings(kafka_bootstrap), addr_setting, tmp_path)
    log = log_dir / f"{module}.log"
    proc = start(s, log, "-m", module)
    try:
        assert proc.wait(120) == 1, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errors = error_lines(log)
    assert [e["event"] for e in errors] == ["kafka_reader_failed"], errors
    assert "UNKNOWN_TOPIC_OR_PART" in errors[0]["error"]
    assert health(getattr(s, addr_setting), name) is None  # nothing is left listening
