"""Ground truth recomputed from the input topics, independently of the processor.

Deliberately simple (plain dicts, whole history in memory, no incremental tricks) so
it can be trusted to judge the processor: the audit command diffs it against
posts_with_counts and trending_posts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from mysocial.events import Checked, InvalidEvent, check, event_time_ms
from mysocial.kafka import topics
from mysocial.kafka.reader import Record
from processor.trending import TrendingConfig


@dataclass
class TruePost:
    post_id: str
    author: str
    caption: str
    created_ms: int
    deleted: bool = False
    # user -> (liked now?, first engagement time)
    likes: dict[str, bool] = field(default_factory=dict)
    first_engaged: dict[str, int] = field(default_factory=dict)
    # comment id -> (author, created ms, deleted?)
    comments: dict[str, tuple[str, int, bool]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # comment id -> text (live ones)
    events: int = 0

    @property
    def like_count(self) -> int:
        return sum(1 for liked in self.likes.values() if liked)

    @property
    def comment_count(self) -> int:
        return sum(1 for _, _, deleted in self.comments.values() if not deleted)


@dataclass
class Truth:
    posts: dict[str, TruePost]
    invalid: int

    def live(self) -> dict[str, TruePost]:
        return {pid: p for pid, p in self.posts.items() if not p.deleted}


def compute(
    posts: Iterable[Record],
    likes: Iterable[Record],
    comments: Iterable[Record],
    posts_partitions: int,
    engagement_partitions: int,
) -> Truth:
    """Apply every valid event in its partition's order.

    Creation comes first for a post whatever the interleaving with its likes and
    comments (the processor queues early events until their post arrives), so the
    posts topic is folded before the engagement topics.
    """
    invalid = 0
    created: dict[str, TruePost] = {}
    deletes: list[tuple[str, str]] = []
    for rec in posts:
        try:
            c = check(topics.POSTS, rec.key, rec.value, rec.partition, posts_partitions)
        except InvalidEvent:
            invalid += 1
            continue
        if c.kind == "post_created":
            if c.post_id not in created:
                created[c.post_id] = TruePost(
                    c.post_id,
                    c.actor,
                    c.event.post_created.caption,
                    event_time_ms(c.event, rec.timestamp_ms),
                )
        else:
            deletes.append((c.post_id, c.actor))

    def engagement(rec: Record, source: str) -> tuple[TruePost, Checked, int] | None:
        nonlocal invalid
        try:
            c = check(source, rec.key, rec.value, rec.partition, engagement_partitions)
        except InvalidEvent:
            invalid += 1
            return None
        post = created.get(c.post_id)
        if post is None:
            return None
        return post, c, event_time_ms(c.event, rec.timestamp_ms)

    # Deletes are applied in posts order, but likes/comments that reached the post
    # before it was deleted do not matter: a deleted post has no counts.
    for rec in likes:
        got = engagement(rec, topics.LIKES)
        if got is None:
            continue
        post, c, t = got
        actor = c.actor
        post.events += 1
        liked = c.kind == "post_liked"
        if liked:
            post.first_engaged[actor] = min(t, post.first_engaged.get(actor, t))
        if liked or actor in post.likes:
            post.likes[actor] = liked
    for rec in comments:
        got = engagement(rec, topics.COMMENTS)
        if got is None:
            continue
        post, c, t = got
        event = c.event
        post.events += 1
        if c.kind == "comment_added":
            cid = event.comment_added.comment_id
            if cid not in post.comments:
                post.comments[cid] = (event.actor_user_id, t, False)
                post.texts[cid] = event.comment_added.text
                user = event.actor_user_id
                post.first_engaged[user] = min(t, post.first_engaged.get(user, t))
        else:
            cid = event.comment_deleted.comment_id
            found = post.comments.get(cid)
            if found and not found[2] and event.actor_user_id in (found[0], post.author):
                post.comments[cid] = (found[0], found[1], True)
                post.texts.pop(cid, None)
    for post_id, actor in deletes:
        target = created.get(post_id)
        if target is not None and actor == target.author:
            target.deleted = True
    return Truth(created, invalid)


@dataclass(frozen=True)
class TrueTrending:
    """A post's trending score at some time, in the terms of a published entry's
    breakdown: a user with a live comment counts as a commenter, else as a liker if
    they like the post (whatever the weights, which may be equal)."""

    counted_likers: int
    counted_commenters: int
    like_points: float
    comment_points: float
    newest_ms: int  # the newest engagement that ever counted

    @property
    def score(self) -> float:
        return self.like_points + self.comment_points

    @property
    def counted(self) -> int:
        return self.counted_likers + self.counted_commenters


def trending_of(cfg: TrendingConfig, post: TruePost, now_ms: int) -> TrueTrending:
    """The post's trending terms at now_ms.

    The horizon uses the newest engagement that ever counted (a retraction does not
    make a post look older), as the processor does.
    """
    commenters = {a for a, _, deleted in post.comments.values() if not deleted}
    likers = {u for u, liked in post.likes.items() if liked} - commenters
    commenters.discard(post.author)
    likers.discard(post.author)

    def points(users: set[str], weight: float) -> float:
        return sum(
            weight * math.pow(2.0, (post.first_engaged[u] - now_ms) / cfg.half_life_ms)
            for u in users
        )

    newest = max((t for u, t in post.first_engaged.items() if u != post.author), default=0)
    return TrueTrending(
        counted_likers=len(likers),
        counted_commenters=len(commenters),
        like_points=points(likers, cfg.like_weight),
        comment_points=points(commenters, cfg.comment_weight),
        newest_ms=newest,
    )


def trending_ranking(cfg: TrendingConfig, truth: Truth, now_ms: int) -> list[tuple[str, float]]:
    """The expected global top-K at now_ms as (post_id, score), best first."""
    return eligible_scores(cfg, truth, now_ms)[: cfg.top_k]


def eligible_scores(cfg: TrendingConfig, truth: Truth, now_ms: int) -> list[tuple[str, float]]:
    """Every post that may trend at now_ms with its score, best first."""
    scored = []
    for post in truth.live().values():
        t = trending_of(cfg, post, now_ms)
        if (
            t.counted >= cfg.min_distinct_users
            and now_ms - t.newest_ms <= cfg.horizon_s * 1000
            and t.score > 0
        ):
            scored.append((post.post_id, t.score))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored
