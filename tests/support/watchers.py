"""Stream clients that behave like a well-written app: WatchPosts and WatchFeed readers
that reconnect when the query service goes away and judge what they were shown.

Each reader keeps, per post, the highest version it has shown and ignores messages
with a lower one (as the CLI's views do). It records what the fault tests assert: the
first message of every (re)connected stream, how long each reconnect took, states
dropped as stale, and any count shown going backwards. With a likes-only load, a
shown like_count that decreases is a bug whatever its cause.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc

from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.5


@dataclass
class Shown:
    """What a reader shows for one post."""

    version: int
    like_count: int
    comment_count: int


@dataclass
class Connection:
    """One stream of a reader: when it was asked for and what came first."""

    requested_at: float
    first_at: float | None = None
    first_kind: str = ""  # "snapshot" or what else came first
    messages: int = 0


@dataclass
class Reader:
    """One resuming stream client (WatchPosts of `post_ids`, or WatchFeed when empty)."""

    name: str
    post_ids: list[str]
    shown: dict[str, Shown] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    stale: int = 0  # messages older than what was shown, dropped
    backwards: list[str] = field(default_factory=list)  # shown counts that decreased
    lower_snapshot: list[str] = field(default_factory=list)  # reconnect snapshots behind
    deleted: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # statuses other than UNAVAILABLE
    last_message_at: float = 0.0
    mark: float = 0.0  # set by Readers.mark(): first_after_mark is the next message's time
    first_after_mark: float | None = None

    @property
    def feed(self) -> bool:
        return not self.post_ids

    def take(self, post: Any, version: int, deleted: bool, in_snapshot: bool) -> None:
        """Apply one post state as the app would, noting what the test judges."""
        pid = post.post_id
        if pid in self.deleted:
            return
        if deleted:
            self.deleted.add(pid)
            return
        before = self.shown.get(pid)
        if before is not None and version < before.version:
            self.stale += 1
            if in_snapshot:
                self.lower_snapshot.append(f"{pid}: snapshot v{version} < shown v{before.version}")
            return
        if before is not None and post.like_count < before.like_count:
            self.backwards.append(
                f"{pid}: likes {before.like_count} -> {post.like_count} "
                f"(v{before.version} -> v{version})"
            )
        self.shown[pid] = Shown(version, post.like_count, post.comment_count)


class Readers:
    """Many Readers on one event loop in a background thread."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.readers: list[Reader] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._tasks: list[Future[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self.stopping = False

    def start(self, readers: list[Reader]) -> None:
        self.readers.extend(readers)
        for reader in readers:
            coro = self._run(reader)
            self._tasks.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _stub(self) -> q_grpc.QueryServiceStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.addr)
        return q_grpc.QueryServiceStub(self._channel)

    def _open(self, stub: q_grpc.QueryServiceStub, reader: Reader) -> AsyncIterator[Any]:
        if reader.feed:
            stream: Any = stub.WatchFeed(q.WatchFeedRequest(snapshot_size=20))
        else:
            stream = stub.WatchPosts(q.WatchPostsRequest(post_ids=reader.post_ids))
        return stream  # type: ignore[no-any-return]

    async def _run(self, reader: Reader) -> None:
        stub = await self._stub()
        delay = RETRY_FIRST_S
        while not self.stopping:
            conn = Connection(time.monotonic())
            reader.connections.append(conn)
            stream = self._open(stub, reader)
            snapshot_left = set(reader.post_ids)
            try:
                async for msg in stream:
                    now = time.monotonic()
                    reader.last_message_at = now
                    if reader.mark and reader.first_after_mark is None and now >= reader.mark:
                        reader.first_after_mark = now
                    if conn.first_at is None:
                        conn.first_at = now
                        conn.first_kind = _kind(msg, reader)
                        delay = RETRY_FIRST_S
                    conn.messages += 1
                    if reader.feed:
                        in_snapshot = msg.kind == q.FEED_EVENT_KIND_SNAPSHOT
                        if msg.HasField("post") and msg.post.post_id:
                            deleted = msg.kind == q.FEED_EVENT_KIND_DELETED
                            reader.take(msg.post, msg.version, deleted, in_snapshot)
                    else:
                        in_snapshot = msg.post.post_id in snapshot_left
                        snapshot_left.discard(msg.post.post_id)
                        reader.take(msg.post, msg.version, msg.deleted, in_snapshot)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED and self.stopping:
                    return
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    reader.errors.append(f"{exc.code().name}: {exc.details()}")
            if conn.first_at is None:
                reader.connections.pop()  # refused or still loading: not a stream yet
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def connected_since(self, since: float) -> int:
        """Readers whose current stream began after `since` and has sent something."""
        return sum(
            1
            for r in self.readers
            if r.connections
            and r.connections[-1].requested_at >= since
            and r.connections[-1].first_at is not None
        )

    def mark(self, at: float) -> None:
        """From `at` on, note when each reader next receives something."""
        for reader in self.readers:
            reader.first_after_mark = None
            reader.mark = at

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]
    ) -> None:
        """Wait for condition; `what` may be a callable that says what is still missing."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout}s waiting for {said}")
            time.sleep(0.05)

    def close(self) -> None:
        self.stopping = True

        async def shut() -> None:
            if self._channel is not None:
                await self._channel.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        for task in self._tasks:
            task.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def _kind(msg: Any, reader: Reader) -> str:
    if reader.feed:
        return "snapshot" if msg.kind == q.FEED_EVENT_KIND_SNAPSHOT else f"kind {msg.kind}"
    return "snapshot" if msg.post.post_id == reader.post_ids[0] else "out of order"
