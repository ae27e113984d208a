"""Test helpers: waiting on conditions, reading topics, running servers on free ports."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET, PROJECT_ROOT, Settings

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll condition until it returns a truthy value; fail after timeout (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition}: {last!r}"
            )
        time.sleep(interval)


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (with pair=True, port+1 is free too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair or port >= 65535:
            return port
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


Metadata = tuple[tuple[str, str | bytes], ...]


def auth(user: str, secret: str = DEV_JWT_SECRET, ttl: int = 3600) -> Metadata:
    """gRPC metadata with a bearer token for user."""
    return (("authorization", f"Bearer {mint_token(user, secret, ttl)}"),)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int


def to_record(msg: Any) -> Record:
    """A consumed confluent-kafka Message as a plain Record."""
    headers = {str(k): bytes(v) for k, v in (msg.headers() or [])}
    return Record(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.key(),
        msg.value(),
        headers,
        msg.timestamp()[1],
    )


def read_topic(
    bootstrap: str, topic: str, timeout: float = 10.0, isolation: str = "read_committed"
) -> list[Record]:
    """Every record of topic from the beginning up to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        parts = sorted(md.topics[topic].partitions)
        ends = {}
        for p in parts:
            ends[p] = _high_watermark(consumer, topic, p, timeout)
        todo = {p for p in parts if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition())
                        continue
                    raise RuntimeError(str(err))
                rec = to_record(msg)
                out.append(rec)
                if rec.offset + 1 >= ends[rec.partition]:
                    todo.discard(rec.partition)
        if todo:
            raise AssertionError(f"could not read {topic} partitions {sorted(todo)} to the end")
        return out
    finally:
        consumer.close()


def _high_watermark(consumer: Consumer, topic: str, partition: int, timeout: float) -> int:
    """High watermark, retrying while a just-created partition's leader settles."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(
                consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)[1]
            )
        except KafkaException as exc:
            retriable = exc.args[0].code() in (
                KafkaError.NOT_LEADER_FOR_PARTITION,
                KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner hash)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (
            (data[i4] & 0xFF)
            + ((data[i4 + 1] & 0xFF) << 8)
            + ((data[i4 + 2] & 0xFF) << 16)
            + ((data[i4 + 3] & 0xFF) << 24)
        )
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    idx = length & ~3
    if extra >= 3:
        h ^= (data[idx + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[idx + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[idx] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def kafka_partition(key: str, partitions: int) -> int:
    """The partition the Java client (and murmur2_random) picks for key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class LoopThread:
    """An asyncio loop in a background thread, to host grpc.aio servers in tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def python_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(settings.to_env())
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def service_process(
    module: str, settings: Settings, log_path: Path, *args: str, **extra_env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m module` with settings; kill it on exit if still running."""
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=python_env(settings, **extra_env),
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
