"""kill -9 the query service while 200 Watch streams are open, then start it again.

Every client reconnects (retrying while the service is refused or loading) and
resumes: the first message of its new stream is a snapshot, and no client is ever
shown a count going back (the load is likes by distinct users, so a shown like_count
may only grow; versions let a client drop a state older than one it showed). In the
end every client shows the counts GetPost answers.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time

import grpc

from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2 as q
from processor.audit import wait_caught_up
from tests.support.helpers import auth, wait_until
from tests.support.services import System
from tests.support.watchers import Reader, Readers

POSTS = 20
FEEDS = 100  # WatchFeed streams
WATCHERS = 100  # WatchPosts streams, 5 posts each


class LikeLoad:
    """Likes by distinct users, round-robin over the posts, until stopped."""

    def __init__(self, addr: str, post_ids: list[str], concurrency: int = 8) -> None:
        self.addr, self.post_ids, self.concurrency = addr, post_ids, concurrency
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(self.addr) as channel:
            stub = cmd_grpc.CommandServiceStub(channel)

            async def worker(w: int) -> None:
                i = w
                while not self._stop.is_set():
                    user = f"fan{i}"
                    md = (("authorization", f"Bearer {mint_token(user, DEV_JWT_SECRET, 3600)}"),)
                    request = cmd.LikePostRequest(
                        post_id=self.post_ids[i % len(self.post_ids)], request_id=f"like-{i}"
                    )
                    try:
                        await stub.LikePost(request, metadata=md, timeout=30)
                        self.sent += 1
                    except grpc.aio.AioRpcError as exc:
                        self.errors.append(f"{exc.code().name}: {exc.details()}")
                    i += self.concurrency

            await asyncio.gather(*(worker(w) for w in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def test_watch_streams_resume_after_kill_9_without_going_back(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    post_ids = [
        commands.CreatePost(
            cmd.CreatePostRequest(caption=f"post {i}", request_id=f"post-{i}"),
            metadata=auth("author"),
            timeout=30,
        ).post_id
        for i in range(POSTS)
    ]
    every_post = q.BatchGetPostsRequest(post_ids=post_ids)
    wait_until(
        lambda: not queries.BatchGetPosts(every_post).missing_post_ids,
        60,
        what="the posts in the read model",
    )
    rng = random.Random(9)
    readers = Readers(system.query.addr)
    load: LikeLoad | None = None
    try:
        readers.start([Reader(f"feed{i}", []) for i in range(FEEDS)])
        readers.start([Reader(f"posts{i}", rng.sample(post_ids, 5)) for i in range(WATCHERS)])
        streams = FEEDS + WATCHERS
        readers.wait_for(lambda: readers.connected_since(0) == streams, 60, "every snapshot")
        load = LikeLoad(system.command.addr, post_ids)
        wait_until(lambda: load.sent >= 400, 120, what="likes before the kill")
        readers.wait_for(
            lambda: all(any(s.like_count for s in r.shown.values()) for r in readers.readers),
            60,
            "every client to show some likes",
        )
        shown_before = {
            r.name: {p: s.like_count for p, s in r.shown.items()} for r in readers.readers
        }
        killed = time.monotonic()
        system.query.kill()
        system.query.start(wait=False)
        system.query.wait_serving(120)
        serving = time.monotonic() - killed
        readers.wait_for(
            lambda: readers.connected_since(killed) == streams, 120, "every stream to reconnect"
        )
        sent = load.sent
        wait_until(lambda: load.sent >= sent + 400, 120, what="likes after the reconnect")
        load.stop()
        assert wait_caught_up(system.settings, 120)

        def converged() -> bool:
            truth = {p.post_id: p.like_count for p in queries.BatchGetPosts(every_post).posts}
            return all(
                s.like_count == truth[pid] for r in readers.readers for pid, s in r.shown.items()
            )

        readers.wait_for(converged, 60, "every client to show the final counts")
    finally:
        if load is not None:
            load.stop()
        readers.close()
    assert load.errors == []
    resumed = [next(c for c in r.connections if c.requested_at >= killed) for r in readers.readers]
    assert all(c.first_kind == "snapshot" for c in resumed), [c.first_kind for c in resumed]
    assert all(not r.errors for r in readers.readers), [r.errors for r in readers.readers][:5]
    assert [b for r in readers.readers for b in r.backwards] == []
    assert [b for r in readers.readers for b in r.lower_snapshot] == []
    for r in readers.readers:  # nothing shown before the kill was taken back
        for pid, likes in shown_before[r.name].items():
            assert r.shown[pid].like_count >= likes
    reconnect = sorted((c.first_at or 0) - killed for c in resumed)
    stale = sum(r.stale for r in readers.readers)
    print(
        f"\n{streams} streams; query service SERVING {serving:.2f}s after kill -9; streams "
        f"resumed p50 {statistics.median(reconnect):.2f}s, max {reconnect[-1]:.2f}s after it; "
        f"{load.sent} likes; stale states dropped by clients: {stale}"
    )
