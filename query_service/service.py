"""The read side's application layer: read model + tailer + stream hub + waiting.

The servicer calls these methods; they contain no gRPC. Everything runs on the event
loop thread (the tailer hands batches over), so reads are consistent snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from mysocial.config import Settings
from mysocial.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from mysocial.kafka import topics
from mysocial.log import get_logger
from mysocial.tokens import ConsistencyToken
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import resources_pb2 as res
from query_service import queries
from query_service.models import Change, ReadModel
from query_service.streams import Hub
from query_service.tailer import COMMENT, POST, TRENDING, Item, Tailer

log = get_logger("query.service")

FEED_CAPACITY = 1024


class ReadSide:
    """Read models kept up to date from Kafka, and the operations on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = ReadModel(
            settings.topic(topics.POSTS),
            settings.topic(topics.LIKES),
            settings.topic(topics.COMMENTS),
        )
        self.hub = Hub(capacity=FEED_CAPACITY)
        self.model.trending_listeners.append(
            lambda _: self.hub.on_trending(self.model.trending_version)
        )
        self.ready = asyncio.Event()
        self.tailer: Tailer | None = None
        self.on_ready: list[Callable[[], None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tailer = Tailer(self.settings, loop, self.apply, self._ready)
        self.tailer.start()

    def stop(self) -> None:
        if self.tailer is not None:
            self.tailer.stop()

    def _ready(self) -> None:
        self.ready.set()
        for callback in self.on_ready:
            callback()

    # -- applying -------------------------------------------------------------------
    def apply(self, batch: list[Item]) -> None:
        """Apply one batch from the tailer, then notify streams and waiters."""
        model = self.model
        changes: list[tuple[Change, str]] = []
        authors: dict[str, str] = {}
        touched: list[str] = []
        for item in batch:
            if item.kind == POST:
                before = model.posts.get(item.key)
                change = model.apply_post_record(item.key, item.value)
                touched.append(item.key)
                if change is not None:
                    changes.append((change, item.key))
                    view = model.posts.get(item.key) or before
                    if view is not None:
                        authors[item.key] = view.post.author_id
            elif item.kind == COMMENT:
                post_id = model.apply_comment_event(
                    item.partition, item.offset, item.value, item.time_ms
                )
                if post_id is not None:
                    touched.append(post_id)
            elif item.kind == TRENDING:
                model.apply_trending(item.value)
        if changes:
            self.hub.on_changes(changes, authors)
        model.publish([], touched)

    # -- read-your-writes -----------------------------------------------------------------
    async def consistent(self, token: str, deadline: float | None) -> None:
        """Wait until the write named by a consistency token is visible."""
        if not token:
            return
        parsed = ConsistencyToken.decode(token)
        kind = self.model.topic_kind.get(parsed.topic)
        if kind is None:
            raise InvalidArgument(
                "consistency_token does not come from this deployment", field="consistency_token"
            )
        if kind != topics.POSTS and not 0 <= parsed.partition < self.settings.likes_partitions:
            raise InvalidArgument("consistency_token is malformed", field="consistency_token")
        model = self.model

        def condition() -> bool:
            return model.applied(kind, parsed.partition, parsed.offset, parsed.post_id)

        future = model.wait_until(parsed.post_id, condition)
        try:
            await asyncio.wait_for(future, timeout=deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                "the read model has not applied this write yet; retry with the same token",
                reason="CONSISTENCY_TOKEN_NOT_REACHED",
            ) from None

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise Unavailable("read models are still loading; retry shortly", reason="LOADING")

    # -- unary reads --------------------------------------------------------------------
    def get_post(self, post_id: str) -> res.Post:
        post = self.model.get(queries.post_id(post_id))
        if post is None:
            raise NotFound(f"post {post_id} not found")
        return post

    def batch_get(self, post_ids: list[str]) -> q.BatchGetPostsResponse:
        found, missing = [], []
        for pid in queries.post_ids(post_ids):
            post = self.model.get(pid)
            if post is None:
                missing.append(pid)
            else:
                found.append(post)
        return q.BatchGetPostsResponse(posts=found, missing_post_ids=missing)

    def list_posts(self, req: q.ListPostsRequest) -> q.ListPostsResponse:
        author = queries.author_id(req.author_id)
        size = queries.page_size(req.page_size)
        cursor = queries.decode_page_token(req.page_token, "posts", author)
        posts, last = self.model.page(author, cursor, size)
        token = queries.encode_page_token("posts", author, last) if last else ""
        return q.ListPostsResponse(posts=posts, next_page_token=token)

    def list_comments(self, req: q.ListCommentsRequest) -> q.ListCommentsResponse:
        post_id = queries.post_id(req.post_id)
        size = queries.page_size(req.page_size)
        cursor = queries.decode_page_token(req.page_token, "comments", post_id)
        if self.model.get(post_id) is None:
            raise NotFound(f"post {post_id} not found")
        comments, last = self.model.comment_page(post_id, cursor, size)
        token = queries.encode_page_token("comments", post_id, last) if last else ""
        return q.ListCommentsResponse(comments=comments, next_page_token=token)

    def trending(self, limit: int) -> q.GetTrendingResponse:
        n = queries.limit(limit)
        ranking = self.model.trending
        if ranking is None:
            return q.GetTrendingResponse()
        entries = ranking.entries[:n] if n else ranking.entries
        return q.GetTrendingResponse(entries=entries, computed_at=ranking.computed_at)

    # -- streams --------------------------------------------------------------------------
    async def watch_posts(self, post_ids: list[str]) -> AsyncIterator[q.WatchPostsResponse]:
        ids = queries.post_ids(post_ids)
        sub = self.hub.watch_posts(ids)
        try:
            for pid in ids:  # snapshot, taken in the same loop step as subscribing
                yield self._post_message(pid, 0)
            while True:
                await sub.wait()
                for pid, pending in sub.take():
                    yield self._post_message(pid, pending.skipped)
        finally:
            self.hub.unsubscribe(sub, ids)

    def _post_message(self, post_id: str, skipped: int) -> q.WatchPostsResponse:
        post = self.model.get(post_id)
        if post is None:
            return q.WatchPostsResponse(
                post=res.Post(post_id=post_id), deleted=True, skipped_updates=skipped
            )
        return q.WatchPostsResponse(post=post, skipped_updates=skipped)

    async def watch_feed(
        self, author_id: str, snapshot_size: int
    ) -> AsyncIterator[q.WatchFeedResponse]:
        author = queries.author_id(author_id)
        size = queries.page_size(snapshot_size, "snapshot_size")
        sub = self.hub.watch_feed(author)
        try:
            for message in self._feed_snapshot(author, size, 0):
                yield message
            while True:
                await sub.wait()
                if sub.resync:
                    skipped = sub.resync_skipped
                    sub.resync, sub.resync_skipped = False, 0
                    sub.pending.clear()
                    for message in self._feed_snapshot(author, size, skipped):
                        yield message
                    continue
                for pid, pending in sub.take():
                    yield self._feed_message(pid, pending.change, pending.skipped)
        finally:
            self.hub.unsubscribe(sub)

    def _feed_snapshot(self, author: str, size: int, skipped: int) -> list[q.WatchFeedResponse]:
        posts = self.model.newest(author, size)
        kind = q.FEED_EVENT_KIND_SNAPSHOT
        if not posts:
            return [q.WatchFeedResponse(kind=kind, snapshot_complete=True, skipped_updates=skipped)]
        out = [q.WatchFeedResponse(kind=kind, post=p, skipped_updates=skipped) for p in posts]
        out[-1].snapshot_complete = True
        return out

    def _feed_message(self, post_id: str, change: Change, skipped: int) -> q.WatchFeedResponse:
        post = self.model.get(post_id)
        if post is None or change == Change.DELETED:
            return q.WatchFeedResponse(
                kind=q.FEED_EVENT_KIND_DELETED,
                post=res.Post(post_id=post_id),
                skipped_updates=skipped,
            )
        kind = q.FEED_EVENT_KIND_CREATED if change == Change.CREATED else q.FEED_EVENT_KIND_UPDATED
        return q.WatchFeedResponse(kind=kind, post=post, skipped_updates=skipped)

    async def watch_trending(self, limit: int) -> AsyncIterator[q.WatchTrendingResponse]:
        n = queries.limit(limit)
        sub = self.hub.watch_trending()
        try:
            sent = 0
            if self.model.trending is not None:
                sent = self.model.trending_version
                yield self._trending_message(n, 0)
            while True:
                await sub.wait()
                latest = self.model.trending_version
                if latest == sent:
                    continue
                skipped = latest - sent - 1 if sent else 0
                sent = latest
                yield self._trending_message(n, skipped)
        finally:
            self.hub.unsubscribe(sub)

    def _trending_message(self, n: int, skipped: int) -> q.WatchTrendingResponse:
        ranking = self.model.trending or res.TrendingRanking()
        entries = ranking.entries[:n] if n else ranking.entries
        return q.WatchTrendingResponse(
            entries=entries, computed_at=ranking.computed_at, skipped_updates=skipped
        )

    def subscribers(self) -> int:
        return len(self.hub)
