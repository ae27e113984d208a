"""The query side's read models: on local disk, with hot posts and recent changes in RAM.

Built from three projections: `posts_with_counts` (posts and their counts, tombstones
for deleted posts), `post_comments` (each comment as it is now, tombstones for deleted
ones; kept forever, unlike the raw `comments` events) and `trending_posts` (the
ranking). Who may delete a comment is the processor's decision: the listing follows
the records. Everything lives in the replica's RocksDB (query_service.store); memory
holds a bounded LRU cache of posts (GetPost, BatchGetPosts, stream messages and
read-your-writes checks are answered from it) and a bounded index of the newest
changes (feed streams). All of it runs on the event loop thread, so no locks are
needed and a handler sees a consistent state between two applied batches.

The tailer applies a batch between begin() and commit(positions): the batch's
changes and the offsets they reach are one atomic RocksDB write. Outside a batch
every apply_* call commits at once (unit tests, tools). Every change is reported to
listeners (the stream hub) and wakes read-your-writes waiters whose condition became
true.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from mysocial.kafka import topics
from mysocial.post_comments import CommentRecord
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from query_service.store import FeedKey as FeedKey
from query_service.store import Gone, PostView, QueryStore, decode_view

DEFAULT_CACHE_POSTS = 50_000
# Feed streams further behind than FEED_CAPACITY (service.py) distinct posts resync
# anyway; the index keeps more so that a reader slightly behind still catches up.
DEFAULT_CHANGE_INDEX = 10_000


class Change(Enum):
    CREATED = 1
    UPDATED = 2
    DELETED = 3


@dataclass(slots=True)
class Changed:
    """A post's newest change in the change index."""

    seq: int
    created_seq: int  # its creation's sequence number (0: before this index's window)


Listener = Callable[[list[tuple[Change, str]]], None]


@dataclass
class Waiter:
    condition: Callable[[], bool]
    future: asyncio.Future[None]


class _Posts:
    """Live posts by id (cache, then disk), for code that reads `model.posts`."""

    def __init__(self, model: ReadModel) -> None:
        self._model = model

    def get(self, post_id: str) -> PostView | None:
        view = self._model.lookup(post_id)
        return view if isinstance(view, PostView) else None

    def __getitem__(self, post_id: str) -> PostView:
        view = self.get(post_id)
        if view is None:
            raise KeyError(post_id)
        return view

    def __contains__(self, post_id: object) -> bool:
        return isinstance(post_id, str) and self.get(post_id) is not None


class _Deleted:
    """`post_id in model.deleted`: the post's tombstone was applied."""

    def __init__(self, model: ReadModel) -> None:
        self._model = model

    def __contains__(self, post_id: object) -> bool:
        return isinstance(post_id, str) and isinstance(self._model.peek(post_id), Gone)


class _DeletedAt(_Deleted):
    """Deleted posts as feed streams need them: (change seq or 0, author, version)."""

    def get(self, post_id: str) -> tuple[int, str, int] | None:
        gone = self._model.peek(post_id)
        if not isinstance(gone, Gone):
            return None
        entry = self._model.changes.get(post_id)
        return (entry.seq if entry is not None else 0, gone.author_id, gone.version)


class _Has:
    """`key in ...` answered by a store query (authors with posts, posts with comments)."""

    def __init__(self, has: Callable[[str], bool]) -> None:
        self._has = has

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._has(key)


class ReadModel:
    """Posts with counts, comments, trending, and read-your-writes waiters."""

    def __init__(
        self,
        posts_topic: str,
        likes_topic: str,
        comments_topic: str,
        store: QueryStore,
        *,
        cache_posts: int = DEFAULT_CACHE_POSTS,
        change_index: int = DEFAULT_CHANGE_INDEX,
    ) -> None:
        # Consistency tokens name the topics the command service wrote (raw events).
        self.topic_kind = {
            posts_topic: topics.POSTS,
            likes_topic: topics.LIKES,
            comments_topic: topics.COMMENTS,
        }
        self.store = store
        self.cache_posts = max(1, cache_posts)
        self.change_index = max(1, change_index)
        # Most recently used last; deleted posts stay as Gone (terminal, cheap to keep).
        self.cache: OrderedDict[str, PostView | Gone] = OrderedDict()
        self.posts = _Posts(self)
        self.deleted = _Deleted(self)
        self.deleted_at = _DeletedAt(self)
        self.by_author = _Has(store.has_author)
        self.comments = _Has(store.has_comments)
        self.listeners: list[Listener] = []
        self.trending_listeners: list[Callable[[res.TrendingRanking], None]] = []
        self.waiters: dict[str, list[Waiter]] = {}
        # Change index for feed streams: every change gets the next sequence number and
        # moves its post to the end; a stream remembers the last number it has seen and
        # asks for the posts changed since. Only the newest `change_index` posts are
        # kept: a cursor before `floor` cannot be answered (the stream resyncs).
        self.seq = 0
        self.floor = 0
        self.changes: OrderedDict[str, Changed] = OrderedDict()
        self._in_batch = False
        # Set once the tailer has caught up: from then on every commit stamps the store
        # with the time (mysocial.kafka.warm_start checks its age).
        self.caught_up = False
        # Posts changed in the open batch: written once each at commit, however often
        # they changed in it (hot posts under load).
        self._dirty: dict[str, PostView | Gone] = {}
        self._load()

    def _load(self) -> None:
        """What is kept in memory besides the caches: positions and the ranking."""
        # `comments` partition -> 1 + the newest src-offset applied from post_comments:
        # every comment event of that partition before it is in the listing.
        self.comment_positions: dict[int, int] = self.store.comment_positions()
        stored = self.store.trending()
        self.trending = res.TrendingRanking.FromString(stored) if stored is not None else None
        self.trending_version = 1 if self.trending is not None else 0

    def reset(self) -> None:
        """Wipe the store and forget everything (a rebuild from the topics follows)."""
        self.store.wipe()
        self.cache.clear()
        self._dirty.clear()
        self.changes.clear()
        self.floor = self.seq
        self._load()

    # -- batches ------------------------------------------------------------------------
    def begin(self) -> None:
        """Collect the following changes into one write (until commit)."""
        self._in_batch = True

    def commit(self, positions: Mapping[tuple[str, int], int] | None = None) -> None:
        """Write the batch's changes with the tailer's next offsets, atomically."""
        store = self.store
        for post_id, view in self._dirty.items():
            store.put_post(post_id, view)
        self._dirty.clear()
        for (topic, partition), offset in (positions or {}).items():
            store.put_offset(topic, partition, offset)
        store.commit(self.caught_up)
        self._in_batch = False
        cache = self.cache
        while len(cache) > self.cache_posts:
            cache.popitem(last=False)

    def _done(self) -> None:
        if not self._in_batch:
            self.commit()

    # -- looking posts up -----------------------------------------------------------------
    def lookup(self, post_id: str) -> PostView | Gone | None:
        """A post's state (cache, else disk, then cached): the hot path's read."""
        cache = self.cache
        view = cache.get(post_id)
        if view is not None:
            cache.move_to_end(post_id)
            return view
        raw = self.store.post(post_id)
        if raw is None:
            return None
        view = cache[post_id] = decode_view(post_id, raw)
        if not self._in_batch and len(cache) > self.cache_posts:
            cache.popitem(last=False)
        return view

    def peek(self, post_id: str) -> PostView | Gone | None:
        """Like lookup, without making the post hot (listings, rebuilds)."""
        view = self.cache.get(post_id)
        if view is not None:
            return view
        raw = self.store.post(post_id)
        return decode_view(post_id, raw) if raw is not None else None

    # -- applying records ------------------------------------------------------------
    def apply_post_record(
        self, post_id: str, value: ev.PostWithCounts | None, version: int = 0
    ) -> Change | None:
        """A posts_with_counts record (None = tombstone) and its version (1 + its
        offset); returns what changed."""
        change = self._apply_post(post_id, value, version)
        self._done()
        return change

    def _apply_post(
        self, post_id: str, value: ev.PostWithCounts | None, version: int
    ) -> Change | None:
        current = self.lookup(post_id)
        if isinstance(current, Gone):
            return None  # deletion is final
        store = self.store
        if value is None:
            # A post never seen gets an anonymous marker: its version is unknown.
            gone = Gone(current.author_id, version) if current is not None else Gone("", 0)
            self.cache[post_id] = gone
            self.cache.move_to_end(post_id)
            self._dirty[post_id] = gone
            store.drop_comments(post_id)
            if current is not None:
                store.index(current.author_id, current.feed_key, add=False)
                self._changed(post_id, False)
            return Change.DELETED
        post = value.post
        if current is None:
            view = PostView(
                post.SerializeToString(),
                sys.intern(post.author_id),
                (-post.created_at.ToMilliseconds(), post_id),
                value.posts_applied_through,
                value.likes_applied_through,
                value.comments_applied_through,
                version,
            )
            self.cache[post_id] = view
            store.index(view.author_id, view.feed_key)
            self._dirty[post_id] = view
            self._changed(post_id, True)
            return Change.CREATED
        current.data = post.SerializeToString()
        current.version = version
        current.updates += 1
        current.posts_at = max(current.posts_at, value.posts_applied_through)
        current.likes_at = max(current.likes_at, value.likes_applied_through)
        current.comments_at = max(current.comments_at, value.comments_applied_through)
        self._dirty[post_id] = current
        self._changed(post_id, False)
        return Change.UPDATED

    def _changed(self, post_id: str, created: bool) -> None:
        self.seq += 1
        entry = self.changes.pop(post_id, None)
        if entry is None:
            entry = Changed(self.seq, self.seq if created else 0)
        else:
            entry.seq = self.seq
        self.changes[post_id] = entry
        if len(self.changes) > self.change_index:
            _, oldest = self.changes.popitem(last=False)
            self.floor = oldest.seq

    def changed_since(self, cursor: int) -> list[tuple[int, str]]:
        """(sequence number, post id) of every post whose newest change is after cursor
        (complete only if not forgotten(cursor))."""
        out = []
        for post_id, entry in reversed(self.changes.items()):
            if entry.seq <= cursor:
                break
            out.append((entry.seq, post_id))
        out.reverse()
        return out

    def forgotten(self, cursor: int) -> bool:
        """Have changes after cursor left the index (a stream there must resync)?"""
        return cursor < self.floor

    def apply_comment_record(self, record: CommentRecord) -> str:
        """A `post_comments` record; returns the post id it concerns.

        A live value inserts or replaces the comment, a tombstone drops it. Records of
        a deleted post change nothing (its comments went with its tombstone).
        """
        if record.src_offset >= 0:
            partition = record.src_partition
            if record.src_offset >= self.comment_positions.get(partition, 0):
                self.comment_positions[partition] = record.src_offset + 1
                self.store.put_comment_position(partition, record.src_offset + 1)
        post_id = record.post_id
        if not isinstance(self.peek(post_id), Gone):
            old = self.store.comment_key(post_id, record.comment_id)
            if record.comment is None:
                if old is not None:
                    self.store.put_comment(post_id, old, None)
            else:
                key = (-record.comment.created_at.ToMilliseconds(), record.comment_id)
                if old is not None and old != key:  # not expected: created_at is fixed
                    self.store.put_comment(post_id, old, None)
                self.store.put_comment(post_id, key, record.data)
        self._done()
        return post_id

    def apply_trending(self, ranking: res.TrendingRanking) -> None:
        self.trending = ranking
        self.trending_version += 1
        self.store.put_trending(ranking.SerializeToString())
        self._done()
        for listener in self.trending_listeners:
            listener(ranking)

    def publish(self, changes: list[tuple[Change, str]], touched: Iterable[str]) -> None:
        """After a batch: notify listeners, then wake satisfied waiters."""
        if changes:
            for listener in self.listeners:
                listener(changes)
        for post_id in set(touched):
            self._check_waiters(post_id)

    # -- reads ------------------------------------------------------------------------
    def get(self, post_id: str) -> res.Post | None:
        view = self.lookup(post_id)
        return view.post if isinstance(view, PostView) else None

    def page_views(
        self, author_id: str, after: FeedKey | None, size: int
    ) -> tuple[list[PostView], FeedKey | None]:
        """Posts newest first strictly after the cursor; returns (page, next cursor)."""
        keys = self.store.feed(author_id, after, size + 1)
        more = len(keys) > size
        del keys[size:]
        cache = self.cache
        views = [cache.get(key[1]) for key in keys]
        missing = [key[1] for key, view in zip(keys, views, strict=True) if view is None]
        if missing:  # read from disk in one go, without making them hot
            found = iter(self.store.posts(missing))
            for i, view in enumerate(views):
                if view is None:
                    raw = next(found)
                    views[i] = decode_view(keys[i][1], raw) if raw is not None else None
        page = [v for v in views if isinstance(v, PostView)]
        return page, (keys[-1] if keys and more else None)

    def page(
        self, author_id: str, after: FeedKey | None, size: int
    ) -> tuple[list[res.Post], FeedKey | None]:
        views, cursor = self.page_views(author_id, after, size)
        return [v.post for v in views], cursor

    def comment_page(
        self, post_id: str, after: FeedKey | None, size: int
    ) -> tuple[list[res.Comment], FeedKey | None]:
        """Live comments newest first strictly after the cursor."""
        rows = self.store.comments(post_id, after, size + 1)
        more = len(rows) > size
        del rows[size:]
        out = [res.Comment.FromString(data) for _, data in rows]
        return out, (rows[-1][0] if rows and more else None)

    def newest(self, author_id: str, count: int) -> list[res.Post]:
        return self.page(author_id, None, count)[0]

    # -- read-your-writes ---------------------------------------------------------------
    def applied(self, kind: str, partition: int, offset: int, post_id: str) -> bool:
        """Has the read model applied event `offset` of `kind`'s partition for post_id?"""
        view = self.lookup(post_id)
        if isinstance(view, Gone):
            return True  # terminal: nothing later can change what a read returns
        if kind == topics.POSTS:
            return view is not None and view.posts_at > offset
        if kind == topics.LIKES:
            return view is not None and view.likes_at > offset
        if kind == topics.COMMENTS:
            return (
                view is not None
                and view.comments_at > offset
                and self.comment_positions.get(partition, 0) > offset
            )
        return False

    def wait_until(self, post_id: str, condition: Callable[[], bool]) -> asyncio.Future[None]:
        """A future resolved once condition() holds (checked when post_id changes)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if condition():
            future.set_result(None)
            return future
        self.waiters.setdefault(post_id, []).append(Waiter(condition, future))
        return future

    def _check_waiters(self, post_id: str) -> None:
        waiting = self.waiters.get(post_id)
        if not waiting:
            return
        still = []
        for waiter in waiting:
            if waiter.future.done():
                continue
            if waiter.condition():
                waiter.future.set_result(None)
            else:
                still.append(waiter)
        if still:
            self.waiters[post_id] = still
        else:
            del self.waiters[post_id]
