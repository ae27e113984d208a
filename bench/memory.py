"""M1: memory per tracked item, measured as the slope of RSS between two sizes.

query_service: RSS after loading N posts (synthetic posts_with_counts records written
straight to the topic) for two values of N → bytes per post.
processor: RSS after catching up on two backlogs of different sizes → bytes per like
(state lives in RocksDB; only its bounded caches are in RAM).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.harness import Child, fresh_settings
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.producer import producer_config
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res


def write_posts(settings: Settings, n: int) -> None:
    """n realistic posts_with_counts records (caption ~60 characters)."""
    producer = Producer(producer_config(kafka_connection(settings), **{"linger.ms": 20}))
    topic = settings.topic(topics.POSTS_WITH_COUNTS)
    for i in range(n):
        pid = str(uuid.uuid4())
        post = res.Post(
            post_id=pid,
            author_id=f"user{i % 50_000}",
            caption=f"sunset over the bay, day {i} of the trip #travel #photo",
            like_count=i % 500,
            comment_count=i % 40,
            media_ids=[f"{i:064x}"],
        )
        post.created_at.FromMilliseconds(1_800_000_000_000 + i)
        post.media.append(
            res.Media(media_id=f"{i:064x}", content_type="image/jpeg", width=1080, height=1350)
        )
        value = ev.PostWithCounts(post=post, posts_applied_through=i + 1).SerializeToString()
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    pid.encode(),
                    partition=partition_for(pid.encode(), settings.copartitions),
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def query_rss_after_loading(settings: Settings, n: int, log_dir: Path) -> int:
    write_posts(settings, n)
    child = Child("query_service", settings, log_dir / f"query-m1-{n}.log")
    try:
        child.wait_event("read_models_ready", 600)
        time.sleep(1.0)
        return child.rss_bytes()
    finally:
        child.stop()


def query_bytes_per_post(bootstrap: str, small: int, big: int, log_dir: Path) -> dict[str, Any]:
    rss = {}
    for n in (small, big):
        settings = fresh_settings(bootstrap, log_format="json")
        rss[n] = query_rss_after_loading(settings, n, log_dir)
    per_post = (rss[big] - rss[small]) / (big - small)
    return {"posts": [small, big], "rss_bytes": [rss[small], rss[big]], "bytes_per_post": per_post}
