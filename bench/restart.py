"""R1: how fast the read side is back after a restart, and what it holds in RAM.

Loads N posts and 3 comments per post straight into the projections
(`posts_with_counts`, `post_comments`) and N PostCreated events into `posts`, and
commits the processor group's offsets at the end of `posts`, as a processor that
applied them leaves them (so a cold command directory loads `posts_with_counts` and
reads no `posts` history: command_service.directory_snapshot). Then for each
service: start it on an empty state folder (cold: everything is read from Kafka), stop
it (SIGTERM), start it again on the folder it left (warm). Each time is measured from
process start to gRPC health SERVING; the cold one gives the rebuild rate. The query
service's RSS after the cold load, per post, is reported next to M1 (which measures
the slope between two sizes).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import Consumer, Producer, TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness import Child
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.producer import producer_config
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res

COMMENTS_PER_POST = 3
T0_MS = 1_800_000_000_000


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, partition: int) -> None:
    while True:
        try:
            producer.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def load(settings: Settings, posts: int) -> dict[str, int]:
    """posts posts (with counts), COMMENTS_PER_POST comments each, and their
    PostCreated events; returns how many records went to each topic."""
    producer = Producer(
        producer_config(kafka_connection(settings), **{"linger.ms": 50, "batch.size": 1_000_000})
    )
    t = settings.topic
    n = settings.copartitions
    for i in range(posts):
        pid = str(uuid.uuid4())
        author = f"user{i % 50_000}"
        key = pid.encode()
        partition = partition_for(key, n)
        post = res.Post(
            post_id=pid,
            author_id=author,
            caption=f"sunset over the bay, day {i} of the trip #travel #photo",
            like_count=i % 500,
            comment_count=COMMENTS_PER_POST,
        )
        post.created_at.FromMilliseconds(T0_MS + i)
        value = ev.PostWithCounts(post=post, posts_applied_through=i + 1)
        _produce(producer, t(topics.POSTS_WITH_COUNTS), key, value.SerializeToString(), partition)
        created = ev.Event(event_id=str(uuid.uuid4()), actor_user_id=author)
        created.occurred_at.FromMilliseconds(T0_MS + i)
        created.post_created.post_id = pid
        created.post_created.caption = post.caption
        author_key = author.encode()
        _produce(
            producer,
            t(topics.POSTS),
            author_key,
            created.SerializeToString(),
            partition_for(author_key, settings.posts_partitions),
        )
        for j in range(COMMENTS_PER_POST):
            cid = str(uuid.uuid4())
            comment = res.Comment(
                comment_id=cid, post_id=pid, author_id=f"user{(i + j) % 50_000}", text="nice!"
            )
            comment.created_at.FromMilliseconds(T0_MS + i + j + 1)
            _produce(
                producer,
                t(topics.POST_COMMENTS),
                f"{pid}/{cid}".encode(),
                comment.SerializeToString(),
                partition,
            )
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(300)
    _commit_processor_progress(settings)
    return {
        "posts_with_counts": posts,
        "post_comments": posts * COMMENTS_PER_POST,
        "posts": posts,
    }


def _commit_processor_progress(settings: Settings) -> None:
    """The processor group's committed offsets at the end of every `posts` partition."""
    topic = settings.topic(topics.POSTS)
    consumer = Consumer(
        kafka_connection(settings).config(
            {"group.id": settings.topic(topics.PROCESSOR_GROUP), "enable.auto.commit": False}
        )
    )
    try:
        ends = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in range(settings.posts_partitions)
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def _serving(addr: str, service: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            reply = stub.Check(request, timeout=1.0)  # type: ignore[attr-defined]
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def time_to_serving(
    module: str, settings: Settings, addr: str, service: str, log: Path, timeout: float
) -> tuple[float, Child]:
    """Start module; seconds until its health is SERVING (and the running child)."""
    began = time.perf_counter()
    child = Child(module, settings, log)
    deadline = began + timeout
    while not _serving(addr, service):
        if child.proc.poll() is not None:
            raise RuntimeError(f"{module} exited ({child.proc.returncode}); see {log}")
        if time.perf_counter() > deadline:
            child.stop()
            raise TimeoutError(f"{module} not SERVING after {timeout}s; see {log}")
        time.sleep(0.05)
    return time.perf_counter() - began, child


def store_bytes(base: str, pattern: str) -> int:
    """What the stores matching pattern under base take on disk (RocksDB files)."""
    return sum(
        f.stat().st_size for d in Path(base).glob(pattern) for f in d.rglob("*") if f.is_file()
    )


def restarts(
    module: str, settings: Settings, addr: str, service: str, records: int, logs: Path
) -> dict[str, Any]:
    """Cold start, then warm restart on the same state folder."""
    cold_s, child = time_to_serving(module, settings, addr, service, logs / f"r1-{module}.log", 900)
    rss = child.rss_bytes()
    child.stop()
    kind = "query" if module == "query_service" else "command"
    base = (settings.query_state_dir if kind == "query" else settings.command_state_dir) or (
        settings.processor_state_dir
    )
    disk = store_bytes(base, f"{settings.topic_namespace}{kind}-*")
    warm_s, child = time_to_serving(module, settings, addr, service, logs / f"r1-{module}.log", 900)
    child.stop()
    return {
        "cold_s": cold_s,
        "cold_records_per_s": records / cold_s,
        "warm_s": warm_s,
        "rss_after_cold_bytes": rss,
        "disk_bytes": disk,
    }


def r1(settings: Settings, posts: int, logs: Path) -> dict[str, Any]:
    began = time.perf_counter()
    loaded = load(settings, posts)
    load_s = time.perf_counter() - began
    query = restarts(
        "query_service",
        settings,
        settings.query_addr,
        "mysocial.v1.QueryService",
        loaded["posts_with_counts"] + loaded["post_comments"],
        logs,
    )
    query["rss_bytes_per_post"] = query["rss_after_cold_bytes"] / posts
    command = restarts(
        "command_service",
        settings.with_(command_workers=1),
        settings.command_addr,
        "mysocial.v1.CommandService",
        loaded["posts_with_counts"] + loaded["post_comments"],
        logs,
    )
    return {
        "posts": posts,
        "comments": loaded["post_comments"],
        "load_s": load_s,
        "query": query,
        "command": command,
    }
