"""Trending in tests: a watcher that tails trending_posts, and the few commands the
trending tests send through the real command service."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer

from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import resources_pb2 as res
from tests.support.helpers import auth


class RankingWatcher:
    """Tails trending_posts and keeps every ranking with the time it arrived."""

    def __init__(self, settings: Settings) -> None:
        self.rankings: list[tuple[float, res.TrendingRanking]] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            kafka_connection(settings).config(
                {
                    "group.id": f"watch-{uuid.uuid4().hex}",
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 10,
                }
            )
        )
        self._consumer.subscribe([settings.topic("trending_posts")])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(100, 0.05):
                value = msg.value()
                if msg.error() is None and value:
                    ranking = res.TrendingRanking()
                    ranking.ParseFromString(value)
                    self.rankings.append((time.monotonic(), ranking))

    def latest(self) -> res.TrendingRanking | None:
        return self.rankings[-1][1] if self.rankings else None

    def ids(self) -> list[str]:
        latest = self.latest()
        return [e.post_id for e in latest.entries] if latest else []

    def wait_for_like_counts(
        self, like_counts: Mapping[str, int], timeout: float = 30.0
    ) -> res.TrendingRanking:
        """The latest ranking once it ranks each of these posts with exactly its like
        count: a ranking computed after all those likes were merged.

        Being caught up is not enough: a ranking follows the processor's state by up to
        two trending intervals (a partition's candidate list goes out on the timer, the
        merge publishes on the next one), so the latest ranking that names the posts
        may predate the last likes."""
        deadline = time.monotonic() + timeout
        while True:
            latest = self.latest()
            got = {e.post_id: e.like_count for e in latest.entries} if latest else {}
            if all(got.get(post) == n for post, n in like_counts.items()):
                assert latest is not None
                return latest
            if time.monotonic() > deadline:
                seen = {post: got.get(post) for post in like_counts}
                raise AssertionError(
                    f"no ranking with like counts {dict(like_counts)} after {timeout}s; "
                    f"the latest of {len(self.rankings)} has {seen}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def create(stub: cmd_grpc.CommandServiceStub, author: str) -> str:
    return stub.CreatePost(
        cmd.CreatePostRequest(caption=f"by {author}"), metadata=auth(author)
    ).post_id


def like(stub: cmd_grpc.CommandServiceStub, post: str, user: str, unlike: bool = False) -> None:
    if unlike:
        stub.UnlikePost(cmd.UnlikePostRequest(post_id=post), metadata=auth(user))
    else:
        stub.LikePost(cmd.LikePostRequest(post_id=post), metadata=auth(user))
