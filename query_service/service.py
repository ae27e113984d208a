"""The read side's application layer: read model + tailer + stream hub + waiting.

The servicer calls these methods; they contain no gRPC. Everything runs on the event
loop thread (the tailer hands batches over), so reads are consistent snapshots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from mysocial import otel
from mysocial.config import Settings
from mysocial.consistency import ConsistencyToken
from mysocial.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from mysocial.kafka import topics, warm_start
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.tail import Key
from mysocial.log import get_logger
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import resources_pb2 as res
from query_service import metrics, queries
from query_service.models import Change, ReadModel
from query_service.store import LAYOUT, PostView, QueryStore
from query_service.streams import FeedSubscription, Hub, RecentTraces
from query_service.tailer import COMMENT, POST, TRENDING, Item, Tailer

log = get_logger("query.service")

FEED_CAPACITY = 1024


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _strings(tag: bytes, values: list[str]) -> bytes:
    """A repeated string field's bytes (tag: its key byte)."""
    out = b""
    for value in values:
        raw = value.encode()
        out += tag + _varint(len(raw)) + raw
    return out


def _delivery_span(stream: str, post_id: str, parents: list[str]) -> None:
    """An OpenTelemetry span for a stream message, linked to the commands it shows."""
    otel.start_linked(f"query {stream} deliver", parents, post_id=post_id).end()


def state_path(settings: Settings) -> Path:
    """This replica's store: `<namespace>query-<replica id>` in the state folder."""
    base = settings.query_state_dir or settings.processor_state_dir
    return Path(base) / f"{settings.topic_namespace}query-{settings.query_replica_id}"


class ReadSide:
    """Read models kept up to date from Kafka, and the operations on them.

    Opening the store raises mysocial.rocks.StateLocked when another replica has it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = QueryStore(state_path(settings))
        self.model = ReadModel(
            settings.topic(topics.POSTS),
            settings.topic(topics.LIKES),
            settings.topic(topics.COMMENTS),
            self.store,
            cache_posts=settings.query_cache_posts,
        )
        self.hub = Hub(capacity=FEED_CAPACITY)
        self.traces = RecentTraces()
        metrics.COLLECTOR.hub = self.hub  # subscribers, read at scrape time
        self.model.trending_listeners.append(
            lambda _: self.hub.on_trending(self.model.trending_version)
        )
        self.ready = asyncio.Event()
        self.tailer: Tailer | None = None
        self.on_ready: list[Callable[[], None]] = []
        self._feed_cache: dict[tuple[str, int, int], bytes] = {}
        self._failure: asyncio.Future[BaseException] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Decide warm or cold (off the loop), then start the tailer."""
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        self._starting = loop.create_task(self._start(loop))

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        settings, store = self.settings, self.store
        kinds = (topics.POSTS_WITH_COUNTS, topics.POST_COMMENTS, topics.TRENDING_POSTS)
        names = [settings.topic(kind) for kind in kinds]
        offsets = store.offsets()
        try:
            plan = await asyncio.to_thread(
                warm_start.plan,
                kafka_connection(settings),
                LAYOUT,
                names,
                names[:2],
                settings.topic_namespace,
                store.marker(),
                offsets,
                store.caught_up_at(),
            )
        except Exception as exc:  # as when the tailer dies: one error line, exit 1
            log.exception("kafka_reader_failed", reader="query-start", error=repr(exc))
            self._fail(exc)
            return
        started = time.monotonic()
        if plan.cold_reason:
            self.model.reset()
        store.put_marker(plan.marker)
        store.commit()
        log.info(
            "read_models_opening",
            start="cold" if plan.cold_reason else "warm",
            reason=plan.cold_reason or None,
            path=str(store.path),
            wipe_s=round(time.monotonic() - started, 3),
        )
        self.tailer = Tailer(
            settings,
            loop,
            self.apply,
            self._ready,
            starts=plan.starts,
            ready_fields={"start": "cold" if plan.cold_reason else "warm"},
        )
        self.tailer.failure.add_done_callback(lambda f: self._fail(f.result()))
        self.tailer.start()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(exc)

    async def close(self) -> None:
        """Stop reading, then flush and close the store (on the loop: no batch is
        applied after it)."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self.tailer is not None:
            await asyncio.to_thread(self.tailer.stop)
        self._closed = True
        self.store.commit(self.model.caught_up)
        self.store.close()

    @property
    def failure(self) -> asyncio.Future[BaseException]:
        """Completes when the Kafka reader died (it logged why); start() first."""
        if self._failure is None:
            raise RuntimeError("ReadSide.start() was not called")
        return self._failure

    def _ready(self) -> None:
        self.model.caught_up = True
        self.model.commit()  # stamps the store: a complete copy as of now
        self.ready.set()
        for callback in self.on_ready:
            callback()

    # -- applying -------------------------------------------------------------------
    def apply(self, batch: list[Item], positions: Mapping[Key, int] | None = None) -> None:
        """Apply one batch from the tailer (one store write, with the offsets it
        reaches), then notify streams and waiters."""
        if self._closed:
            return  # handed over while stopping: the store is closed
        model = self.model
        changes: list[tuple[Change, str]] = []
        authors: dict[str, str] = {}
        touched: list[str] = []
        model.begin()
        for item in batch:
            if item.kind == POST:
                change = model.apply_post_record(item.key, item.value, item.offset + 1)
                touched.append(item.key)
                if item.traces is not None:
                    self.traces.record(item.key, *item.traces)
                if change is not None:
                    changes.append((change, item.key))
                    view = model.cache.get(item.key)  # just applied: cached
                    if view is not None and view.author_id:
                        authors[item.key] = view.author_id
            elif item.kind == COMMENT:
                touched.append(model.apply_comment_record(item.value))
            elif item.kind == TRENDING:
                model.apply_trending(item.value)
        model.commit(positions)
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
        if kind != topics.POSTS and not 0 <= parsed.partition < self.settings.copartitions:
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
                since, sub.since = sub.since, 0.0
                for pid, pending in sub.take():
                    if pending.skipped:
                        metrics.SKIPPED_BY["posts"].inc(pending.skipped)
                    yield self._post_message(pid, pending.skipped)
                metrics.delivered("posts", since)
        finally:
            self.hub.unsubscribe(sub, ids)

    def _post_message(self, post_id: str, skipped: int) -> q.WatchPostsResponse:
        view = self.model.lookup(post_id)
        ids, parents = self.traces.of(post_id)
        if parents and otel.enabled():
            _delivery_span("WatchPosts", post_id, parents)
        if not isinstance(view, PostView):
            return q.WatchPostsResponse(
                post=res.Post(post_id=post_id),
                deleted=True,
                skipped_updates=skipped,
                version=view.version if view is not None else 0,
                correlation_ids=ids,
                traceparents=parents,
            )
        return q.WatchPostsResponse(
            post=view.post,
            skipped_updates=skipped,
            version=view.version,
            correlation_ids=ids,
            traceparents=parents,
        )

    async def watch_feed(self, author_id: str, snapshot_size: int) -> AsyncIterator[bytes]:
        """Snapshot, then the posts changed since this reader last looked (pre-serialized)."""
        author = queries.author_id(author_id)
        size = queries.page_size(snapshot_size, "snapshot_size")
        model = self.model
        sub = self.hub.watch_feed(author, model.seq)
        try:
            for message in self._feed_snapshot(author, size, 0):
                yield message.SerializeToString()
            while True:
                await sub.wait()
                since, sub.since = sub.since, 0.0
                forgotten = model.forgotten(sub.cursor)
                changed = model.changed_since(sub.cursor)
                seen, sub.cursor = sub.cursor, model.seq
                if forgotten or len(changed) > FEED_CAPACITY:
                    # Too far behind to catch up post by post (or behind what the change
                    # index still knows): a fresh snapshot instead.
                    missed = model.seq - seen if forgotten else len(changed)
                    metrics.RESYNCS_BY["feed"].inc()
                    for message in self._feed_snapshot(author, size, missed):
                        yield message.SerializeToString()
                    continue
                for _, post_id in changed:
                    update = self._feed_bytes(post_id, author, seen, sub)
                    if update is not None:
                        yield update
                metrics.delivered("feed", since)
        finally:
            self.hub.unsubscribe_feed(sub)

    def _feed_bytes(
        self, post_id: str, author: str, seen: int, sub: FeedSubscription
    ) -> bytes | None:
        """The serialized update for post_id, shared by every reader of that version."""
        model = self.model
        found = model.cache.get(post_id) or model.lookup(post_id)  # just changed: cached
        entry = model.changes.get(post_id)
        if found is None or entry is None:
            return None  # not changed since this process started: nothing to send
        view = found if isinstance(found, PostView) else None
        if author and found.author_id != author:
            return None
        if view is None:
            key = (post_id, entry.seq, q.FEED_EVENT_KIND_DELETED)
            skipped = 0
        else:
            kind = (
                q.FEED_EVENT_KIND_CREATED if entry.created_seq > seen else q.FEED_EVENT_KIND_UPDATED
            )
            key = (post_id, entry.seq, kind)
            skipped = sub.skipped(post_id, view.updates)
        version = found.version
        cached = self._feed_cache.get(key)
        if cached is None:
            # WatchFeedResponse{kind, post, version, correlation_ids, traceparents}
            # written directly around the stored post bytes: no parse and re-serialize
            # per version (field 1 varint, 2 message, 5 varint, 6 and 7 strings).
            data = view.data if view is not None else res.Post(post_id=post_id).SerializeToString()
            cached = b"\x08" + _varint(key[2]) + b"\x12" + _varint(len(data)) + data
            if version:
                cached += b"\x28" + _varint(version)
            ids, parents = self.traces.of(post_id)
            cached += _strings(b"\x32", ids) + _strings(b"\x3a", parents)
            if len(self._feed_cache) > 20_000:
                self._feed_cache.clear()
            self._feed_cache[key] = cached
        if otel.enabled():
            parents = self.traces.of(post_id)[1]
            if parents:
                _delivery_span("WatchFeed", post_id, parents)
        if skipped:
            metrics.SKIPPED_BY["feed"].inc(skipped)
            # Protobuf fields may be appended: the shared bytes plus this reader's count
            # (field 4, skipped_updates, varint).
            cached += b"\x20" + _varint(skipped)
        return cached

    def _feed_snapshot(self, author: str, size: int, skipped: int) -> list[q.WatchFeedResponse]:
        views, _ = self.model.page_views(author, None, size)
        kind = q.FEED_EVENT_KIND_SNAPSHOT
        if not views:
            return [q.WatchFeedResponse(kind=kind, snapshot_complete=True, skipped_updates=skipped)]
        out = [
            q.WatchFeedResponse(kind=kind, post=v.post, skipped_updates=skipped, version=v.version)
            for v in views
        ]
        out[-1].snapshot_complete = True
        return out

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
                since, sub.since = sub.since, 0.0
                latest = self.model.trending_version
                if latest == sent:
                    continue
                skipped = latest - sent - 1 if sent else 0
                sent = latest
                if skipped:
                    metrics.SKIPPED_BY["trending"].inc(skipped)
                yield self._trending_message(n, skipped)
                metrics.delivered("trending", since)
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
