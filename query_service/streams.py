"""Fan-out of read-model changes to streaming subscribers, with bounded memory.

WatchPosts and WatchTrending subscribers own a coalescing queue of *keys* (post ids),
not messages: a post changed 500 times while the reader was busy is one pending
entry, and the message is built from the latest state when it is finally sent; the
queue holds at most the watched posts. Feed subscribers (every post) hold only a
cursor into the read model's change index and ask it, when ready to send, which posts
changed since: one entry per change however many readers, and a reader too far
behind gets a fresh snapshot saying how many updates it skipped. Memory per
subscriber is therefore bounded whatever the write rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from mysocial import trace
from query_service.metrics import RESYNCS_BY
from query_service.models import Change

# When a pending entry already exists, which kind wins (a client that has not yet
# seen a post's creation must still see it as created; a deletion trumps all).
_PRIORITY = {Change.UPDATED: 0, Change.CREATED: 1, Change.DELETED: 2}


class RecentTraces:
    """The newest correlation ids and traceparents (mysocial/trace.py) of the commands
    included in each recently changed post, for the stream messages that show it.
    Bounded: the posts changed longest ago are forgotten first."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._by_post: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()

    def record(self, post_id: str, ids: list[str], parents: list[str]) -> None:
        old = self._by_post.pop(post_id, None)
        if old is not None:
            ids, parents = trace.merge(old[0], ids), trace.merge(old[1], parents)
        self._by_post[post_id] = (ids[-trace.MAX_TRACES :], parents[-trace.MAX_TRACES :])
        if len(self._by_post) > self.capacity:
            self._by_post.popitem(last=False)

    def of(self, post_id: str) -> tuple[list[str], list[str]]:
        return self._by_post.get(post_id) or ([], [])


@dataclass(slots=True)
class Pending:
    change: Change
    skipped: int = 0


@dataclass(eq=False)  # identity semantics: subscriptions live in sets
class Subscription:
    """One streaming client's pending changes."""

    capacity: int
    pending: OrderedDict[str, Pending] = field(default_factory=OrderedDict)
    resync: bool = False
    resync_skipped: int = 0
    trending_version: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    since: float = 0.0  # time.monotonic() of the oldest change not yet sent (metrics)

    def offer(self, change: Change, key: str) -> None:
        if not self.since:
            self.since = time.monotonic()
        if self.resync:
            self.resync_skipped += 1
            return
        entry = self.pending.get(key)
        if entry is not None:
            entry.skipped += 1
            if _PRIORITY[change] > _PRIORITY[entry.change]:
                entry.change = change
        elif len(self.pending) >= self.capacity:
            # Too far behind: drop what is pending and resend the state from scratch.
            RESYNCS_BY["posts"].inc()
            self.resync = True
            self.resync_skipped += sum(e.skipped + 1 for e in self.pending.values()) + 1
            self.pending.clear()
        else:
            self.pending[key] = Pending(change)
        self.wakeup.set()

    def offer_trending(self, version: int) -> None:
        if not self.since:
            self.since = time.monotonic()
        self.trending_version = version
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()

    def take(self, limit: int = 256) -> list[tuple[str, Pending]]:
        out: list[tuple[str, Pending]] = []
        while self.pending and len(out) < limit:
            out.append(self.pending.popitem(last=False))
        if self.pending:
            self.wakeup.set()
        return out


@dataclass(eq=False)
class FeedSubscription:
    """A feed stream: a cursor into the read model's change index, woken on changes.

    It holds no queue at all: when it is ready to send, it asks the read model which
    posts changed after its cursor, so a slow reader costs nothing while it is slow.
    """

    author_id: str
    cursor: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Update count of each post when it was last sent here (bounded), for skipped_updates.
    sent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    closed: bool = False
    since: float = 0.0  # time.monotonic() of the oldest change not yet sent (metrics)

    def wake(self, now: float) -> None:
        if not self.since:
            self.since = now
        self.wakeup.set()

    async def wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()

    def skipped(self, post_id: str, updates: int, limit: int = 4096) -> int:
        """Updates of post_id this reader never saw separately; remembers this send."""
        previous = self.sent.pop(post_id, None)
        self.sent[post_id] = updates
        if len(self.sent) > limit:
            self.sent.popitem(last=False)
        return max(0, updates - previous - 1) if previous is not None else 0


class Hub:
    """Routes read-model changes to the subscriptions interested in them."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.by_post: dict[str, set[Subscription]] = {}
        self.feed: set[FeedSubscription] = set()
        self.by_author: dict[str, set[FeedSubscription]] = {}
        self.trending: set[Subscription] = set()

    def __len__(self) -> int:
        posts = {s for subs in self.by_post.values() for s in subs}
        authors = sum(len(subs) for subs in self.by_author.values())
        return len(posts | self.trending) + len(self.feed) + authors

    # -- subscribe ------------------------------------------------------------------
    def watch_posts(self, post_ids: list[str]) -> Subscription:
        sub = Subscription(capacity=max(len(post_ids), 1))
        for pid in post_ids:
            self.by_post.setdefault(pid, set()).add(sub)
        return sub

    def watch_feed(self, author_id: str, cursor: int) -> FeedSubscription:
        sub = FeedSubscription(author_id, cursor)
        if author_id:
            self.by_author.setdefault(author_id, set()).add(sub)
        else:
            self.feed.add(sub)
        return sub

    def watch_trending(self) -> Subscription:
        sub = Subscription(capacity=1)
        self.trending.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription, post_ids: list[str] | None = None) -> None:
        sub.closed = True
        for pid in post_ids or ():
            subs = self.by_post.get(pid)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.by_post[pid]
        self.trending.discard(sub)

    def unsubscribe_feed(self, sub: FeedSubscription) -> None:
        sub.closed = True
        self.feed.discard(sub)
        subs = self.by_author.get(sub.author_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_author[sub.author_id]

    # -- publish ----------------------------------------------------------------------
    def on_changes(self, changes: list[tuple[Change, str]], author_of: dict[str, str]) -> None:
        """After a batch: queue per-post watchers, wake feed streams once each."""
        for change, post_id in changes:
            for sub in self.by_post.get(post_id, ()):
                sub.offer(change, post_id)
        if not changes:
            return
        now = time.monotonic()
        for feed_sub in self.feed:
            feed_sub.wake(now)
        if self.by_author:
            for author in {author_of.get(pid) for _, pid in changes}:
                for feed_sub in self.by_author.get(author or "", ()):
                    feed_sub.wake(now)

    def on_trending(self, version: int) -> None:
        for sub in self.trending:
            sub.offer_trending(version)
