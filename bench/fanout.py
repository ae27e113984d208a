"""T3: updates/s delivered to many streaming subscribers, against a no-op streamer.

Subscribers are raw-bytes gRPC clients (no response parsing) in separate processes so
the client side costs the same for both servers. The query service is fed by writing
`posts_with_counts` updates straight to Kafka (isolating fan-out from the rest of the
pipeline); the no-op server streams a fixed message as fast as gRPC lets it. Both are
measured as messages received per second by all subscribers together.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import grpc
from confluent_kafka import Producer

from bench.harness import Child, child_env, free_port
from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.producer import producer_config
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import resources_pb2 as res

WATCH_FEED = "/mysocial.v1.QueryService/WatchFeed"


def _subscriber_proc(addr: str, streams: int, seconds: float, warmup: float, out: Any) -> None:
    async def main() -> int:
        received = [0]
        total = [0]
        errors: list[str] = []
        counting = [False]
        channels = [grpc.aio.insecure_channel(addr) for _ in range(max(1, streams // 100))]
        request = q.WatchFeedRequest(snapshot_size=1).SerializeToString()

        async def one(channel: grpc.aio.Channel) -> None:
            call: Any = channel.unary_stream(WATCH_FEED)(request)  # type: ignore[arg-type]
            try:
                async for _ in call:
                    total[0] += 1
                    if counting[0]:
                        received[0] += 1
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")

        tasks = [asyncio.create_task(one(channels[i % len(channels)])) for i in range(streams)]
        await asyncio.sleep(warmup)
        counting[0] = True
        await asyncio.sleep(seconds)
        counting[0] = False
        for task in tasks:
            task.cancel()
        for channel in channels:
            await channel.close()
        if errors or not received[0]:
            print(
                f"subscriber: {received[0]} counted, {total[0]} in all, errors {errors[:3]}",
                file=sys.stderr,
                flush=True,
            )
        return received[0]

    out.put(asyncio.run(main()))


def measure_subscribers(
    addr: str, subscribers: int, seconds: float, processes: int = 2, warmup: float = 3.0
) -> float:
    """Messages/s received by `subscribers` WatchFeed streams split over client processes."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(
            target=_subscriber_proc, args=(addr, subscribers // processes, seconds, warmup, out)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + warmup + 120) for _ in procs)
    for p in procs:
        p.join(30)
    return float(total) / seconds


def _feed_updates(settings: Settings, posts: list[str], stop: threading.Event, rate: float) -> int:
    """Write posts_with_counts updates for `posts` round-robin at up to `rate`/s."""
    producer = Producer(producer_config(kafka_connection(settings), **{"linger.ms": 5}))
    topic = settings.topic(topics.POSTS_WITH_COUNTS)
    n = 0
    start = time.perf_counter()
    while not stop.is_set():
        for pid in posts:
            n += 1
            record = ev.PostWithCounts(
                post=res.Post(
                    post_id=pid, author_id="author", caption="hot", like_count=n, comment_count=1
                )
            )
            record.post.created_at.FromMilliseconds(1_800_000_000_000)
            producer.produce(
                topic,
                record.SerializeToString(),
                pid.encode(),
                partition=partition_for(pid.encode(), settings.copartitions),
            )
        producer.poll(0)
        ahead = n / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
    producer.flush(30)
    return n


def t3_fanout(
    settings: Settings, subscribers: int, seconds: float, update_rate: float, log_dir: Any
) -> dict[str, Any]:
    """Delivered updates/s: query service vs the no-op streaming server."""
    # No-op streaming server.
    addr = f"127.0.0.1:{free_port()}"
    noop = subprocess.Popen(
        [sys.executable, "-m", "bench.noop_server", "stream", addr],
        cwd=PROJECT_ROOT,
        env=child_env(settings),
    )
    try:
        _wait_port(addr)
        baseline = measure_subscribers(addr, subscribers, seconds)
    finally:
        noop.send_signal(signal.SIGTERM)
        noop.wait(30)
    # The query service, fed with updates of 200 hot posts.
    addr = f"127.0.0.1:{free_port()}"
    query = Child("query_service", settings.with_(query_addr=addr), log_dir / "query-fanout.log")
    posts = [str(uuid.uuid4()) for _ in range(200)]
    stop = threading.Event()
    feeder = threading.Thread(target=_feed_updates, args=(settings, posts, stop, update_rate))
    try:
        query.wait_event("read_models_ready", 120)
        feeder.start()
        delivered = measure_subscribers(addr, subscribers, seconds)
        rss = query.rss_bytes()
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(60)
        query.stop()
    return {
        "subscribers": subscribers,
        "noop_msgs_per_s": baseline,
        "query_msgs_per_s": delivered,
        "ratio": delivered / baseline if baseline else 0.0,
        "update_rate": update_rate,
        "query_rss_bytes": rss,
    }


def _wait_port(addr: str, timeout: float = 30) -> None:
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=timeout)
    channel.close()
