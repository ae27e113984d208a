"""A peer's like → visible latency, the peer's counterpart of T4 (bench/freshness.py).

With a peer running and caught up, `like_latency` produces likes at a fixed rate to
`<ns>likes` (the project's idempotent acks=all producer, as the command service) and
follows the peer's output topic with a read_committed consumer (as the query service
follows the processor's: fetch.wait.max.ms 5). Per like, the latency is from the
producer's acknowledgement to the first output record of its post whose like_count
includes it, both on this process's clock. T4 measures from LikePost returning (which
is the same acknowledgement, plus the gRPC reply) to WatchPosts delivering the count,
so T4 also includes the query service and its stream.

Each like is by a new user on one of `posts` fresh posts (spread over the partitions),
so the k-th like of a post makes its like_count k; a peer that coalesces several
changes into one record (Kafka Streams' cache) is credited when the count reaches k.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from bench.peers.common import COUNTS, output_topic
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.producer import producer_config
from mysocial.kafka.reader import partitions_of, watermarks
from mysocial.v1 import events_pb2 as ev

RATE = 100.0  # likes/s: T4's fixed point (bench/__main__.py Sizes.t4_fixed_rate)
SECONDS = 60.0
# A JVM that has just caught up on a small backlog is still compiling its hot paths:
# its first window's p99 was 2-4x a later one's. T4's windows come after the whole
# suite has run against the same system, so this one starts warm too.
WARMUP_SECONDS = 30.0
DRAIN_S = 30.0  # after the window, how long to wait for the last likes to show


class OutputFollower:
    """Reads the output topic from its current end; per post, when each like_count was
    first seen."""

    def __init__(self, settings: Settings, topic: str, posts: set[str]) -> None:
        self.posts = posts
        self.seen: dict[str, list[tuple[int, float]]] = {p: [] for p in posts}
        self.consumer = Consumer(
            kafka_connection(settings).config(
                {
                    "group.id": f"peer-latency-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 5,
                    "fetch.min.bytes": 1,
                }
            )
        )
        self.consumer.assign(
            [
                TopicPartition(topic, p, watermarks(self.consumer, topic, p, 30.0)[1])
                for p in partitions_of(self.consumer, topic, 30.0)
            ]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            now = time.perf_counter()
            if msg is None or msg.error() is not None:
                continue
            key, value = msg.key(), msg.value()
            if key is None or value is None or len(value) != COUNTS.size:
                continue
            post = key.decode()
            if post in self.posts:
                self.seen[post].append((COUNTS.unpack(value)[0], now))

    def first_at_least(self, post: str, count: int) -> float | None:
        """When the post's like_count was first seen at `count` or more."""
        return next((t for c, t in list(self.seen[post]) if c >= count), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def like_latency(
    settings: Settings, name: str, rate: float = RATE, seconds: float = SECONDS, posts: int = 20
) -> dict[str, Any]:
    """Likes at `rate`/s for `seconds`; produce acknowledged → count visible, in ms."""
    post_ids = [str(uuid.uuid4()) for _ in range(posts)]
    follower = OutputFollower(settings, output_topic(settings, name), set(post_ids))
    producer = Producer(producer_config(kafka_connection(settings), **{"linger.ms": 0}))
    likes = settings.topic(topics.LIKES)
    acked: dict[int, float] = {}
    failed = 0

    def delivered(n: int) -> Any:
        def callback(err: KafkaError | None, _msg: Any) -> None:
            nonlocal failed
            if err is None:
                acked[n] = time.perf_counter()
            else:
                failed += 1

        return callback

    ts = Timestamp()
    run = uuid.uuid4().hex[:8]
    total = round(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        due = start + n / rate
        while (wait := due - time.perf_counter()) > 0:
            producer.poll(min(wait, 0.005))  # serves acknowledgements meanwhile
        post = post_ids[n % posts]
        ts.FromMilliseconds(int(time.time() * 1000))
        event = ev.Event(
            event_id=f"latency-{run}-{n}",
            occurred_at=ts,
            actor_user_id=f"latency-{run}-{n}",
            post_liked=ev.PostLiked(post_id=post),
        )
        producer.produce(likes, event.SerializeToString(), post.encode(), on_delivery=delivered(n))
        producer.poll(0)
    elapsed = time.perf_counter() - start
    producer.flush(30)
    latencies: list[float] = []
    missing = len(acked)
    deadline = time.perf_counter() + DRAIN_S
    while time.perf_counter() < deadline:
        latencies, missing = [], 0
        for i, t_ack in acked.items():
            seen = follower.first_at_least(post_ids[i % posts], i // posts + 1)
            if seen is None:
                missing += 1
            else:
                latencies.append(max(0.0, seen - t_ack) * 1000)
        if not missing:
            break
        time.sleep(0.2)
    follower.close()
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {
        "rate": rate,
        "seconds": seconds,
        "posts": posts,
        "produced": total,
        "achieved_per_s": round(total / elapsed, 1),
        "acked": len(acked),
        "failed": failed,
        "samples": len(latencies),
        "missing": missing,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": round(latencies[-1], 2) if latencies else None,
    }


def warm_then_measure(
    settings: Settings,
    name: str,
    rate: float = RATE,
    seconds: float = SECONDS,
    warmup_seconds: float = WARMUP_SECONDS,
) -> dict[str, Any]:
    """like_latency after an unmeasured window of warmup_seconds at the same rate (its
    p50/p99 are kept under "warmup")."""
    if warmup_seconds <= 0:
        return like_latency(settings, name, rate, seconds)
    warm = like_latency(settings, name, rate, warmup_seconds)
    measured = like_latency(settings, name, rate, seconds)
    measured["warmup"] = {k: warm[k] for k in ("seconds", "p50_ms", "p99_ms", "missing")}
    return measured
