"""A randomized social workload through the real command service, with its own model.

Each simulated user acts sequentially (an action is sent only after the previous one
was acknowledged), so the order of one user's events in Kafka is the order in which
the model applies them; different users' actions commute for counts. The model is
the test's independent ground truth: it never looks at Kafka.

Every command carries a request_id. A call that fails UNAVAILABLE or DEADLINE_EXCEEDED
is indeterminate (the event may or may not be written); the client sends it again with
the same request_id until it is answered, as Jepsen's clients make an indeterminate
operation determinate, and the model applies an action only once it is answered OK.
The event ids of acknowledged commands are kept, so a test can check that each is in
Kafka (check_acknowledged).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from command_service.commands import event_id_for
from mysocial import ids
from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET, Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import latest_by_key
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor.audit import audit, settle
from tests.support.helpers import events

NOT_FOUND = frozenset({grpc.StatusCode.NOT_FOUND})
DENIED = frozenset({grpc.StatusCode.PERMISSION_DENIED})
# The outcome of a call that failed with these is unknown: it is sent again.
INDETERMINATE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class Acked:
    """A command answered OK: its event's topic and id, and whether it took retries."""

    topic: str
    event_id: str
    retried: bool


@dataclass
class ModelPost:
    post_id: str
    author: str
    caption: str
    deleted: bool = False
    likers: set[str] = field(default_factory=set)
    comments: dict[str, tuple[str, bool]] = field(default_factory=dict)  # id -> (author, deleted)

    @property
    def comment_count(self) -> int:
        return sum(1 for _, deleted in self.comments.values() if not deleted)


@dataclass
class Model:
    posts: dict[str, ModelPost] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)

    def count(self, op: str) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1

    def diff(self, table: dict[bytes, bytes | None]) -> list[str]:
        """Differences between the model and a posts_with_counts table view."""
        problems = []
        for post in self.posts.values():
            raw = table.get(post.post_id.encode())
            if post.deleted:
                if raw is not None:
                    problems.append(f"{post.post_id}: deleted but still in posts_with_counts")
                continue
            if raw is None:
                problems.append(f"{post.post_id}: missing from posts_with_counts")
                continue
            got = ev.PostWithCounts()
            got.ParseFromString(raw)
            want = (post.author, post.caption, len(post.likers), post.comment_count)
            have = (
                got.post.author_id,
                got.post.caption,
                got.post.like_count,
                got.post.comment_count,
            )
            if want != have:
                problems.append(f"{post.post_id}: expected {want}, got {have}")
        extra = {k.decode() for k, v in table.items() if v is not None} - set(self.posts)
        problems += [f"{pid}: unknown post in posts_with_counts" for pid in sorted(extra)]
        return problems

    def diff_comments(self, table: dict[bytes, bytes | None]) -> list[str]:
        """Differences between the model's live comments (of live posts) and a
        post_comments table view (comments of deleted posts are not looked at)."""
        have: dict[tuple[str, str], str] = {}
        for key, raw in table.items():
            if raw is not None:
                post_id, _, cid = key.decode().partition("/")
                have[(post_id, cid)] = res.Comment.FromString(raw).author_id
        want = {
            (post.post_id, cid): author
            for post in self.posts.values()
            if not post.deleted
            for cid, (author, deleted) in post.comments.items()
            if not deleted
        }
        live_posts = {p.post_id for p in self.posts.values() if not p.deleted}
        problems = [
            f"{k}: expected author {a}, got {have.get(k)}"
            for k, a in want.items()
            if have.get(k) != a
        ]
        problems += [
            f"{k}: in post_comments, not a live comment"
            for k in have.keys() - want.keys()
            if k[0] in live_posts
        ]
        return problems


class Workload:
    """Drives `total` commands from `users` concurrent simulated users.

    call_timeout is each attempt's deadline; retry_for bounds how long one command is
    retried before it counts as an error.
    """

    def __init__(
        self,
        addr: str,
        seed: int,
        users: int = 60,
        secret: str = DEV_JWT_SECRET,
        call_timeout: float = 30.0,
        retry_for: float = 180.0,
    ) -> None:
        self.addr = addr
        self.rng = random.Random(seed)
        self.users = [f"user{i}" for i in range(users)]
        self.tokens = {
            u: (("authorization", f"Bearer {mint_token(u, secret, 7200)}"),) for u in self.users
        }
        self.model = Model()
        self.sent = 0
        self.errors: list[str] = []
        self.call_timeout = call_timeout
        self.retry_for = retry_for
        self.retries: Counter[str] = Counter()  # status name -> attempts sent again
        self.acked: list[Acked] = []
        # Events of calls that ended in an allowed error after an indeterminate attempt.
        self.unsettled: set[str] = set()
        self._seq = 0

    def _pick_post(self, rng: random.Random) -> ModelPost | None:
        if not self.model.order:
            return None
        # Zipf-like: a few hot posts take most actions.
        n = len(self.model.order)
        index = min(n - 1, int(n * rng.random() ** 3))
        return self.model.posts[self.model.order[n - 1 - index]]

    async def run(self, total: int, progress: Callable[[int], None] | None = None) -> Model:
        async with grpc.aio.insecure_channel(self.addr) as channel:
            stub = cmd_grpc.CommandServiceStub(channel)
            seeds = [self.rng.random() for _ in self.users]
            # A few posts exist before the crowd arrives (once: run() may continue a
            # workload, and a repeated request id would revive a deleted post's model).
            for i, user in enumerate(self.users[:10] if not self.model.order else []):
                await self._create(stub, user, random.Random(i))
            budget = [total - self.sent]

            async def user_loop(user: str, seed: float) -> None:
                rng = random.Random(seed)
                while budget[0] > 0:
                    budget[0] -= 1
                    await self._act(stub, user, rng)
                    self.sent += 1
                    if progress is not None:
                        progress(self.sent)

            await asyncio.gather(*(user_loop(u, s) for u, s in zip(self.users, seeds, strict=True)))
        return self.model

    def _rid(self, user: str, kind: str) -> str:
        self._seq += 1
        return f"{user}-{kind}-{self._seq}"

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        user: str,
        allowed: frozenset[grpc.StatusCode] = frozenset(),
        event: tuple[str, str, str] | None = None,
    ) -> tuple[Any, bool]:
        """(response, retried): the response is None when the call failed with one of
        the `allowed` codes; retried says an earlier attempt was indeterminate (and may
        have been written). `event` = (topic, command, entity) names the event an OK
        writes, recorded in `acked`."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_for
        attempts = 0
        while True:
            try:
                response = await method(
                    request, metadata=self.tokens[user], timeout=self.call_timeout
                )
                break
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in INDETERMINATE and loop.time() < give_up:
                    attempts += 1
                    self.retries[code.name] += 1
                    await asyncio.sleep(min(0.05 * 2**attempts, 1.0))
                    continue
                if code in allowed:
                    self.model.count(f"rejected_{code.name}")
                    if event is not None and attempts > 0:
                        # An earlier attempt was indeterminate: it may be in Kafka.
                        topic, command, entity = event
                        self.unsettled.add(event_id_for(command, user, request.request_id, entity))
                    return None, attempts > 0
                self.errors.append(f"{type(request).__name__}: {code.name} {exc.details()}")
                raise
        if event is not None:
            topic, command, entity = event
            eid = event_id_for(command, user, request.request_id, entity)
            self.acked.append(Acked(topic, eid, attempts > 0))
        return response, attempts > 0

    async def _create(
        self, stub: cmd_grpc.CommandServiceStub, user: str, rng: random.Random
    ) -> None:
        rid = f"{user}-post-{rng.random()}"
        caption = f"post by {user} #{len(self.model.order)}"
        request = cmd.CreatePostRequest(caption=caption, request_id=rid)
        post_id = ids.derive_id("post", user, rid)
        event = (topics.POSTS, "create", post_id)
        resp, _ = await self._call(stub.CreatePost, request, user, event=event)
        assert resp.post_id == post_id
        if rng.random() < 0.2:  # a client retry: same request id, same post
            again, _ = await self._call(stub.CreatePost, request, user, event=event)
            assert again.post_id == post_id
            self.model.count("create_retry")
        self.model.posts[post_id] = ModelPost(post_id, user, caption)
        self.model.order.append(post_id)
        self.model.count("create")

    async def _act(self, stub: cmd_grpc.CommandServiceStub, user: str, rng: random.Random) -> None:
        r = rng.random()
        post = self._pick_post(rng)
        if post is None or r < 0.04:
            await self._create(stub, user, rng)
            return
        pid = post.post_id
        # The post's author may delete it concurrently: then NOT_FOUND is right.
        racy = NOT_FOUND if post.author != user else frozenset()
        if post.deleted:
            racy = NOT_FOUND
        if r < 0.55 or r >= 0.96:
            like = cmd.LikePostRequest(post_id=pid, request_id=self._rid(user, "like"))
            event = (topics.LIKES, "like", pid)
            if (await self._call(stub.LikePost, like, user, racy, event))[0]:
                if not post.deleted:
                    post.likers.add(user)
                self.model.count("like" if r < 0.55 else "like_again")
        elif r < 0.67:
            unlike = cmd.UnlikePostRequest(post_id=pid, request_id=self._rid(user, "unlike"))
            event = (topics.LIKES, "unlike", pid)
            if (await self._call(stub.UnlikePost, unlike, user, racy, event))[0]:
                post.likers.discard(user)
                self.model.count("unlike")
        elif r < 0.82:
            rid = f"{user}-c-{rng.random()}"
            req = cmd.AddCommentRequest(
                post_id=pid, text=f"nice {rng.random():.3f}", request_id=rid
            )
            cid = ids.derive_id(f"comment:{pid}", user, rid)
            event = (topics.COMMENTS, "comment", cid)
            resp, _ = await self._call(stub.AddComment, req, user, racy, event)
            if resp is None:
                return
            assert resp.comment_id == cid
            if rng.random() < 0.15:
                again, _ = await self._call(stub.AddComment, req, user, racy, event)
                if again is not None:
                    assert again.comment_id == cid
                    self.model.count("comment_retry")
            post.comments.setdefault(cid, (user, False))
            self.model.count("comment")
        elif r < 0.93:
            target = self._delete_comment_target(post, user, rng)
            if target is None:
                return
            cid, authorized = target
            request = cmd.DeleteCommentRequest(
                post_id=pid, comment_id=cid, request_id=self._rid(user, "uncomment")
            )
            if authorized:
                # The comment's author and the post's author may both be deleting it; a
                # retry may find it deleted by its own first attempt. NOT_FOUND: it is
                # deleted either way (or its post is, and its comments count no more).
                event = (topics.COMMENTS, "uncomment", cid)
                done, _ = await self._call(stub.DeleteComment, request, user, NOT_FOUND, event)
                author, _ = post.comments[cid]
                post.comments[cid] = (author, True)
                self.model.count("delete_comment" if done else "delete_comment_gone")
            else:
                await self._call(stub.DeleteComment, request, user, DENIED | NOT_FOUND)
                self.model.count("delete_comment_unauthorized")
        else:
            # Delete a post: usually one's own, sometimes (unauthorized) someone else's.
            mine = [p for p in self.model.posts.values() if p.author == user and not p.deleted]
            if mine and rng.random() < 0.7:
                victim = rng.choice(mine)
                delete = cmd.DeletePostRequest(
                    post_id=victim.post_id, request_id=self._rid(user, "delete")
                )
                event = (topics.POSTS, "delete", victim.post_id)
                # Only the author deletes: NOT_FOUND only after an indeterminate attempt,
                # which was written.
                done, retried = await self._call(stub.DeletePost, delete, user, NOT_FOUND, event)
                assert done is not None or retried, f"own post {victim.post_id} not found"
                victim.deleted = True
                self.model.count("delete_post")
            elif post.author != user:
                delete = cmd.DeletePostRequest(post_id=pid, request_id=self._rid(user, "delete"))
                await self._call(stub.DeletePost, delete, user, DENIED | NOT_FOUND)
                self.model.count("delete_post_unauthorized")

    def _delete_comment_target(
        self, post: ModelPost, user: str, rng: random.Random
    ) -> tuple[str, bool] | None:
        live = [(cid, author) for cid, (author, deleted) in post.comments.items() if not deleted]
        if not live:
            return None
        own = [cid for cid, author in live if author == user]
        if own:
            return rng.choice(own), True
        cid, _ = rng.choice(live)
        return cid, post.author == user  # the post's author may delete any comment


def check_acknowledged(settings: Settings, workload: Workload) -> dict[str, int]:
    """Every command answered OK has its event in Kafka. Some are there more often than
    they were answered (returned as counts for the test's report; the processor counts
    an event id once, which check_exact proves): the earlier attempt of a retried
    command that a stalled broker appended on resuming, and records librdkafka sent
    again after a message of the same producer timed out in flight (its epoch bump
    re-sends the records still in flight, and one the broker had already appended is
    then appended twice, with the same event id and time)."""
    seen: Counter[str] = Counter()
    for topic in (topics.POSTS, topics.LIKES, topics.COMMENTS):
        seen.update(e.event_id for _, e in events(settings, topic))
    oks: Counter[str] = Counter(a.event_id for a in workload.acked)
    retried = {a.event_id for a in workload.acked if a.retried}
    missing = [eid for eid in oks if seen[eid] == 0]
    assert missing == [], f"{len(missing)} acknowledged commands not in Kafka: {missing[:5]}"
    again = [eid for eid, n in oks.items() if seen[eid] > n]
    by_failed_call = {eid for eid in again if eid in workload.unsettled and eid not in retried}
    return {
        "acknowledged": len(workload.acked),
        "retried": len(retried),
        "written_again_retried": sum(1 for eid in again if eid in retried),
        # A second call with the same request_id that failed after an unsettled attempt.
        "written_again_by_a_failed_call": len(by_failed_call),
        "written_again_first_attempt": sum(
            1 for eid in again if eid not in retried and eid not in by_failed_call
        ),
    }


def check_exact(settings: Settings, model: Model) -> None:
    assert settle(settings, 120), "processor did not catch up"
    table = latest_by_key(settings, settings.topic("posts_with_counts"))
    problems = model.diff(table)
    assert problems == [], f"{len(problems)} posts differ from the model: {problems[:10]}"
    comments = latest_by_key(settings, settings.topic(topics.POST_COMMENTS))
    problems = model.diff_comments(comments)
    assert problems == [], f"{len(problems)} comments differ from the model: {problems[:10]}"
    report = audit(settings)
    assert report.ok, report.mismatches[:10] + report.trending_mismatches[:10]
    assert report.live_posts == sum(1 for p in model.posts.values() if not p.deleted)
