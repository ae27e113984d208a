"""Trending in tests: a watcher that tails trending_posts, and the few commands the
trending tests send through the real command service."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer

from mysocial.config import Settings
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
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"watch-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
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
