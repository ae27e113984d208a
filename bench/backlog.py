"""Write a synthetic backlog of events straight to the input topics (fast, for benchmarks).

Posts are created first, then likes and comments over them with a Zipf-like
popularity, with a few unlikes and comment deletions, produced with the same keys and
partitioner as the command service. Returns the number of events written.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Producer
from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.producer import producer_config
from mysocial.v1 import events_pb2 as ev


@dataclass(frozen=True)
class BacklogSpec:
    posts: int = 10_000
    engagements: int = 1_000_000
    users: int = 200_000
    comment_share: float = 0.15
    unlike_share: float = 0.03
    zipf_s: float = 1.1
    seed: int = 1


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def write_backlog(settings: Settings, spec: BacklogSpec) -> tuple[int, list[str]]:
    """Produce the backlog; returns (events written, post ids)."""
    rng = random.Random(spec.seed)
    producer = Producer(
        producer_config(
            kafka_connection(settings),
            **{
                "linger.ms": 20,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 1_000_000,
            },
        )
    )
    ts = Timestamp()
    ts.FromMilliseconds(int(time.time() * 1000))
    post_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(spec.posts)]
    authors = [f"author{i % 5000}" for i in range(spec.posts)]
    t_posts, t_likes, t_comments = (
        settings.topic(topics.POSTS),
        settings.topic(topics.LIKES),
        settings.topic(topics.COMMENTS),
    )
    count = 0

    def send(topic: str, key: str, event: ev.Event) -> None:
        nonlocal count
        while True:
            try:
                producer.produce(topic, event.SerializeToString(), key.encode())
                break
            except BufferError:
                producer.poll(0.05)
        count += 1

    for pid, author in zip(post_ids, authors, strict=True):
        e = ev.Event(
            event_id=uuid.uuid4().hex,
            occurred_at=ts,
            actor_user_id=author,
            correlation_id=uuid.uuid4().hex,
        )
        e.post_created.CopyFrom(ev.PostCreated(post_id=pid, caption="benchmark post"))
        send(t_posts, author, e)
    weights = zipf_weights(spec.posts, spec.zipf_s)
    chosen = rng.choices(range(spec.posts), weights=weights, k=spec.engagements)
    live_comments: dict[int, list[tuple[str, str]]] = {}
    for i, idx in enumerate(chosen):
        pid = post_ids[idx]
        user = f"user{rng.randrange(spec.users)}"
        # A correlation id as the command service mints them (32 hex digits): the
        # processor carries it to the projection's headers.
        e = ev.Event(
            event_id=f"b{i}", occurred_at=ts, actor_user_id=user, correlation_id=f"c{i:031x}"
        )
        r = rng.random()
        if r < spec.comment_share:
            cid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            e.comment_added.CopyFrom(ev.CommentAdded(post_id=pid, comment_id=cid, text="nice!"))
            live_comments.setdefault(idx, []).append((cid, user))
            send(t_comments, pid, e)
        elif r < spec.comment_share + spec.unlike_share:
            e.post_unliked.post_id = pid
            send(t_likes, pid, e)
        elif r < spec.comment_share + spec.unlike_share + 0.01 and live_comments.get(idx):
            cid, author = live_comments[idx].pop()
            e.actor_user_id = author
            e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=pid, comment_id=cid))
            send(t_comments, pid, e)
        else:
            e.post_liked.post_id = pid
            send(t_likes, pid, e)
        if i % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} backlog events not delivered")
    return count, post_ids
