"""Query service end to end: real broker, processor, command and query processes."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from processor.audit import wait_caught_up
from tests.support.helpers import auth, make_settings, wait_until
from tests.support.services import SERVING, System, health


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class StreamReader:
    """Reads a server stream in a thread, keeping (arrival time, message)."""

    def __init__(self, call: grpc.Call) -> None:
        self.call = call
        self.messages: list[tuple[float, Any]] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self.call:  # type: ignore[attr-defined]
                self.messages.append((time.monotonic(), message))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)


async def like_many(addr: str, post_ids: list[str], total: int, concurrency: int = 64) -> None:
    """`total` likes from distinct users, round-robin over post_ids."""
    tokens = [mint_token(f"liker{i}", DEV_JWT_SECRET, 3600) for i in range(total)]
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = cmd_grpc.CommandServiceStub(channel)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                md = (("authorization", f"Bearer {tokens[i]}"),)
                request = cmd.LikePostRequest(post_id=post_ids[i % len(post_ids)])
                await stub.LikePost(request, metadata=md, timeout=30)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def test_end_to_end_counts_and_stream(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    post = commands.CreatePost(cmd.CreatePostRequest(caption="launch"), metadata=auth("alice"))
    pid = post.post_id
    watch = StreamReader(
        queries.WatchPosts(
            q.WatchPostsRequest(post_ids=[pid], consistency_token=post.consistency_token)
        )
    )
    wait_until(lambda: watch.messages, timeout=30, what="the stream's snapshot")
    for i in range(100):
        commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"fan{i}"))
    comment_ids = []
    for i in range(10):
        c = commands.AddComment(
            cmd.AddCommentRequest(post_id=pid, text=f"#{i}"), metadata=auth(f"fan{i}")
        )
        comment_ids.append(c.comment_id)
    for i in range(3):  # three fans take their like back, three comments go away
        commands.UnlikePost(cmd.UnlikePostRequest(post_id=pid), metadata=auth(f"fan{i}"))
        commands.DeleteComment(
            cmd.DeleteCommentRequest(post_id=pid, comment_id=comment_ids[i]),
            metadata=auth(f"fan{i}"),
        )
    last = commands.DeleteComment(  # the post's author removes one more
        cmd.DeleteCommentRequest(post_id=pid, comment_id=comment_ids[3]), metadata=auth("alice")
    )
    got = queries.GetPost(q.GetPostRequest(post_id=pid, consistency_token=last.consistency_token))
    assert (got.post.like_count, got.post.comment_count) == (97, 6)
    comments = queries.ListComments(
        q.ListCommentsRequest(post_id=pid, page_size=100, consistency_token=last.consistency_token)
    )
    assert sorted(c.comment_id for c in comments.comments) == sorted(comment_ids[4:])
    assert [c.text for c in comments.comments] == [f"#{i}" for i in range(9, 3, -1)]  # newest first
    wait_until(
        lambda: (
            watch.messages
            and watch.messages[-1][1].post.like_count == 97
            and watch.messages[-1][1].post.comment_count == 6
        ),
        timeout=30,
        what="stream to reach the final state",
    )
    watch.close()
    assert watch.error is None
    counts = [(m.post.like_count, m.post.comment_count) for _, m in watch.messages]
    assert counts[0] == (0, 0)  # the snapshot comes first
    assert counts == sorted(
        counts, key=lambda c: counts.index(c)
    )  # no message repeats out of order
    # The like counts a client sees are states the post went through, in order: up
    # through the 100 likes, then down through the 3 unlikes. A commit may cover
    # several of them (the stream coalesces to the latest state), even the 100th like
    # and the first unlike together, so the peak seen may be below 100.
    likes_seen = [c[0] for c in counts]
    peak = likes_seen.index(max(likes_seen))
    assert max(likes_seen) <= 100
    assert likes_seen[: peak + 1] == sorted(likes_seen[: peak + 1])
    assert likes_seen[peak:] == sorted(likes_seen[peak:], reverse=True)
    assert counts[-1] == (97, 6)


def test_read_your_writes_never_misses(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    pid = commands.CreatePost(cmd.CreatePostRequest(caption="ryw"), metadata=auth("alice")).post_id
    misses = 0
    for i in range(200):
        liked = commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"reader{i}"))
        got = queries.GetPost(
            q.GetPostRequest(post_id=pid, consistency_token=liked.consistency_token), timeout=10
        )
        misses += got.post.like_count != i + 1
    assert misses == 0


def test_like_to_stream_latency(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    pid = commands.CreatePost(cmd.CreatePostRequest(caption="fast"), metadata=auth("alice")).post_id
    watch = StreamReader(queries.WatchPosts(q.WatchPostsRequest(post_ids=[pid])))
    wait_until(lambda: watch.messages, what="snapshot")
    acked: list[float] = []
    for i in range(500):
        commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"speedy{i}"))
        acked.append(time.monotonic())
    wait_until(lambda: watch.messages[-1][1].post.like_count == 500, timeout=30)
    watch.close()
    delivered: dict[int, float] = {}
    for t, m in watch.messages:
        delivered.setdefault(m.post.like_count, t)
    # A count n proves like n arrived; coalesced counts are credited to the next one seen.
    latencies = []
    for n in range(1, 501):
        seen = min((t for c, t in delivered.items() if c >= n), default=None)
        assert seen is not None
        latencies.append(max(0.0, seen - acked[n - 1]) * 1000)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"\nLikePost -> WatchPosts latency over 500 likes: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"mean {statistics.mean(latencies):.1f} ms"
    )
    assert p99 < 2000  # sanity bound only; targets live in the benchmark (bench/)


def test_slow_readers_stay_bounded_and_catch_up(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    posts = [
        commands.CreatePost(
            cmd.CreatePostRequest(caption=f"hot {i}"), metadata=auth(f"a{i}")
        ).post_id
        for i in range(50)
    ]
    wait_until(lambda: len(queries.ListPosts(q.ListPostsRequest(page_size=100)).posts) == 50)
    baseline_rss = system.query.rss()
    channel = grpc.insecure_channel(system.query.addr)
    stub = q_grpc.QueryServiceStub(channel)
    slow = [stub.WatchFeed(q.WatchFeedRequest()) for _ in range(200)]  # nobody reads them
    peak = [baseline_rss]
    latencies: list[float] = []
    stop = threading.Event()

    def observer() -> None:
        while not stop.is_set():
            started = time.monotonic()
            queries.GetPost(q.GetPostRequest(post_id=posts[0]), timeout=10)
            latencies.append((time.monotonic() - started) * 1000)
            peak.append(system.query.rss())
            time.sleep(0.02)

    watcher = threading.Thread(target=observer)
    watcher.start()
    # 200 likes per post: each stalled stream misses an update per post per commit,
    # thousands of them; it must keep the latest state per post, not a queue of them.
    asyncio.run(like_many(system.command.addr, posts, 10_000))
    assert wait_caught_up(system.settings, 120)
    expected = 10_000 // 50
    wait_until(
        lambda: all(
            p.like_count == expected
            for p in queries.BatchGetPosts(q.BatchGetPostsRequest(post_ids=posts)).posts
        ),
        timeout=60,
    )
    stop.set()
    watcher.join()
    growth_mib = (max(peak) - baseline_rss) / 2**20
    p99 = percentile(latencies, 99)
    print(
        f"\nslow readers: query RSS {baseline_rss / 2**20:.0f} MiB -> "
        f"peak {max(peak) / 2**20:.0f} MiB "
        f"(+{growth_mib:.1f} MiB); other clients' GetPost p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {p99:.1f} ms over {len(latencies)} calls"
    )
    assert growth_mib < 150, "README: 200 stalled feed streams must cost < 150 MiB"
    # Sanity bound only (other clients are never starved); speed targets live in bench/.
    assert p99 < 2000
    # The slow readers resume: each sees every hot post at its final count.
    for call in slow[:20]:
        latest: dict[str, int] = {}
        for message in call:
            if message.post.post_id:
                latest[message.post.post_id] = message.post.like_count
            if all(latest.get(p) == expected for p in posts):
                break
        call.cancel()
    for call in slow[20:]:
        call.cancel()
    channel.close()


def test_feed_pagination_is_stable_while_posts_arrive(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    created = [
        commands.CreatePost(cmd.CreatePostRequest(caption=f"old {i}"), metadata=auth(f"w{i % 7}"))
        for i in range(120)
    ]
    before = [c.post_id for c in created]
    last = commands.CreatePost(cmd.CreatePostRequest(caption="marker"), metadata=auth("w0"))
    # "Existed when paging began" means visible to reads: posts of different authors
    # travel through different partitions, so the marker's token alone does not make
    # the others visible. Each post's own token does.
    for c in created:
        queries.GetPost(
            q.GetPostRequest(post_id=c.post_id, consistency_token=c.consistency_token), timeout=10
        )
    stop = threading.Event()
    created_during: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            resp = commands.CreatePost(
                cmd.CreatePostRequest(caption=f"new {i}"), metadata=auth("late")
            )
            created_during.append(resp.post_id)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[str] = []
    token = ""
    first = True
    while first or token:
        request = q.ListPostsRequest(page_size=7, page_token=token)
        if first:
            request.consistency_token = last.consistency_token
        page = queries.ListPosts(request, timeout=10)
        seen += [p.post_id for p in page.posts]
        token = page.next_page_token
        first = False
        time.sleep(0.01)
    stop.set()
    thread.join()
    assert len(seen) == len(set(seen)), "a post was returned twice"
    assert set(before) | {last.post_id} <= set(seen), (
        "a post that existed when paging began was skipped"
    )
    assert len(created_during) > 0
    # Author filter pages the same way, and tokens cannot be reused across filters.
    page = queries.ListPosts(q.ListPostsRequest(author_id="w0", page_size=5))
    assert all(p.author_id == "w0" for p in page.posts) and page.next_page_token
    with pytest.raises(grpc.RpcError) as info:
        queries.ListPosts(q.ListPostsRequest(author_id="w1", page_token=page.next_page_token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for bad in (-1,):
        with pytest.raises(grpc.RpcError) as info:
            queries.ListPosts(q.ListPostsRequest(page_size=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(queries.ListPosts(q.ListPostsRequest(page_size=100000)).posts) == 100  # capped
    assert len(queries.ListPosts(q.ListPostsRequest()).posts) == 20  # default


def test_command_side_rejections(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    post = commands.CreatePost(cmd.CreatePostRequest(caption="mine"), metadata=auth("owner"))
    pid = post.post_id
    comment = commands.AddComment(
        cmd.AddCommentRequest(post_id=pid, text="hi"), metadata=auth("guest")
    )
    unknown = str(uuid.uuid4())

    def code(call: Callable[[], object]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code()

    not_found = grpc.StatusCode.NOT_FOUND
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert (
        code(lambda: commands.LikePost(cmd.LikePostRequest(post_id=unknown), metadata=auth("x")))
        == not_found
    )
    assert (
        code(
            lambda: commands.AddComment(
                cmd.AddCommentRequest(post_id=unknown, text="t"), metadata=auth("x")
            )
        )
        == not_found
    )
    assert (
        code(
            lambda: commands.DeletePost(cmd.DeletePostRequest(post_id=pid), metadata=auth("guest"))
        )
        == denied
    )
    assert (
        code(
            lambda: commands.DeleteComment(
                cmd.DeleteCommentRequest(post_id=pid, comment_id=comment.comment_id),
                metadata=auth("stranger"),
            )
        )
        == denied
    )
    assert (
        code(
            lambda: commands.DeleteComment(
                cmd.DeleteCommentRequest(post_id=pid, comment_id=str(uuid.uuid4())),
                metadata=auth("owner"),
            )
        )
        == not_found
    )
    commands.DeletePost(cmd.DeletePostRequest(post_id=pid), metadata=auth("owner"))
    assert (
        code(lambda: commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth("x")))
        == not_found
    )
    assert (
        code(
            lambda: commands.AddComment(
                cmd.AddCommentRequest(post_id=pid, text="t"), metadata=auth("x")
            )
        )
        == not_found
    )
    assert (
        code(
            lambda: commands.DeletePost(cmd.DeletePostRequest(post_id=pid), metadata=auth("owner"))
        )
        == not_found
    )
    assert code(lambda: queries.GetPost(q.GetPostRequest(post_id=unknown))) == not_found


def test_likeable_the_moment_create_returns_across_workers(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path
) -> None:
    settings = make_settings(kafka_bootstrap, processor_state_dir=str(tmp_path / "state"))
    provision(settings)
    with System(settings, log_dir, command_workers=2) as running:
        commands = running.commands()
        for i in range(40):  # connections spread over both worker processes
            stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(running.command.addr))
            pid = commands.CreatePost(
                cmd.CreatePostRequest(caption=f"{i}"), metadata=auth("a")
            ).post_id
            stub.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth("b"), timeout=10)


def test_restart_reloads_before_serving(system: System) -> None:
    commands = system.commands()
    posts = [
        commands.CreatePost(
            cmd.CreatePostRequest(caption=f"p{i}"), metadata=auth(f"u{i % 5}")
        ).post_id
        for i in range(300)
    ]
    for i, pid in enumerate(posts[:100]):
        commands.LikePost(cmd.LikePostRequest(post_id=pid), metadata=auth(f"l{i}"))
    assert wait_caught_up(system.settings, 60)
    queries = system.queries()
    wait_until(lambda: queries.GetPost(q.GetPostRequest(post_id=posts[99])).post.like_count == 1)

    def state() -> dict[str, tuple[int, int]]:
        out, token = {}, ""
        while True:
            page = queries.ListPosts(
                q.ListPostsRequest(page_size=100, page_token=token), timeout=10
            )
            out.update({p.post_id: (p.like_count, p.comment_count) for p in page.posts})
            token = page.next_page_token
            if not token:
                return out

    before = state()
    system.query.kill()
    extra = commands.CreatePost(cmd.CreatePostRequest(caption="while down"), metadata=auth("u1"))
    commands.LikePost(cmd.LikePostRequest(post_id=posts[0]), metadata=auth("late"))
    assert wait_caught_up(system.settings, 60)
    system.query.start(wait=False)
    statuses = []
    while True:
        status = health(system.query.addr, "mysocial.v1.QueryService")
        statuses.append(status)
        if status == SERVING:
            break
        assert system.query.proc is not None and system.query.proc.poll() is None
        time.sleep(0.01)
    after = state()  # the first read once SERVING must already be complete
    expected = dict(before)
    expected[extra.post_id] = (0, 0)
    expected[posts[0]] = (before[posts[0]][0] + 1, 0)
    assert after == expected
    assert SERVING not in statuses[:-1]
