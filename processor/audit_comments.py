"""The audit's checks of post_comments, and what it checks when inputs have expired.

`likes` and `comments` keep 7 days: once retention deleted the start of a partition,
the truth can no longer be recomputed for the posts of that partition. The audit then
says so and checks what still holds without the inputs: posts_with_counts against the
processor's changelog (the counts it committed), and each post's comment_count against
its live post_comments records and the changelog's comment records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka.partitioning import partition_for
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor.truth import TruePost

UUID_LEN = 36


@dataclass
class Expired:
    """Partitions of `likes` and `comments` whose first records retention deleted:
    partition -> its first remaining offset."""

    likes: dict[int, int] = field(default_factory=dict)
    comments: dict[int, int] = field(default_factory=dict)

    def describe(self) -> list[str]:
        out = []
        for name, parts in (("likes", self.likes), ("comments", self.comments)):
            if parts:
                out.append(
                    f"{name} partitions {sorted(parts)} start after expired events "
                    f"(first offsets {dict(sorted(parts.items()))}): their posts' "
                    f"{name} are checked against the changelog and the other projections, "
                    "not recomputed"
                )
        return out


def live_comments(table: Mapping[bytes, bytes | None]) -> dict[str, dict[str, res.Comment]]:
    """post id -> comment id -> comment, from the post_comments table."""
    out: dict[str, dict[str, res.Comment]] = {}
    for key, raw in table.items():
        if raw is None:
            continue
        post_id, _, comment_id = key.decode().partition("/")
        out.setdefault(post_id, {})[comment_id] = res.Comment.FromString(raw)
    return out


def comment_mismatches(
    post: TruePost, listed: Mapping[str, res.Comment], recomputable: bool
) -> list[str]:
    """post_comments of one live post against the truth (author, text, time), or, when
    the post's comment events expired, against the post's own comment_count."""
    if not recomputable:
        return []
    out = []
    want = {cid for cid, (_, _, deleted) in post.comments.items() if not deleted}
    for cid in sorted(want - listed.keys()):
        out.append(f"{post.post_id}: comment {cid} missing from post_comments")
    for cid in sorted(listed.keys() - want):
        why = "deleted" if cid in post.comments else "unknown"
        out.append(f"{post.post_id}: {why} comment {cid} present in post_comments")
    for cid in sorted(want & listed.keys()):
        author, created_ms, _ = post.comments[cid]
        got = listed[cid]
        have = (got.author_id, got.text, got.created_at.ToMilliseconds(), got.post_id)
        if have != (author, post.texts.get(cid, ""), created_ms, post.post_id):
            out.append(f"{post.post_id}: comment {cid} differs from its events: {have!r}")
    return out


def changelog_views(
    changelog: Mapping[bytes, bytes | None],
) -> tuple[dict[str, st.PostRecord], dict[str, int]]:
    """From the changelog table: post id -> PostRecord, and post id -> live comments."""
    posts: dict[str, st.PostRecord] = {}
    comments: dict[str, int] = {}
    for key, raw in changelog.items():
        if raw is None:
            continue
        if key[:1] == b"P":
            posts[key[1:].decode()] = st.PostRecord.FromString(raw)
        elif (
            key[:1] == b"C"
            and len(key) == 1 + 2 * UUID_LEN
            and not st.CommentRecord.FromString(raw).deleted
        ):
            post_id = key[1 : 1 + UUID_LEN].decode()
            comments[post_id] = comments.get(post_id, 0) + 1
    return posts, comments


@dataclass
class CrossCheck:
    """What the audit can still check for posts whose inputs expired."""

    expired: Expired
    partitions: int
    changelog_posts: dict[str, st.PostRecord]
    changelog_comments: dict[str, int]
    listed: dict[str, dict[str, res.Comment]]

    def likes_expired(self, post_id: str) -> bool:
        return partition_for(post_id.encode(), self.partitions) in self.expired.likes

    def comments_expired(self, post_id: str) -> bool:
        return partition_for(post_id.encode(), self.partitions) in self.expired.comments

    def mismatches(self, post_id: str, got: ev.PostWithCounts) -> list[str]:
        """posts_with_counts of a post whose likes or comments expired, against the
        changelog and (for comments) post_comments."""
        out = []
        committed = self.changelog_posts.get(post_id)
        if committed is None:
            return [f"{post_id}: in posts_with_counts but not in the changelog"]
        c = committed.post
        if (got.post.like_count, got.post.comment_count) != (c.like_count, c.comment_count):
            out.append(
                f"{post_id}: likes/comments {got.post.like_count}/{got.post.comment_count}, "
                f"changelog says {c.like_count}/{c.comment_count}"
            )
        if self.comments_expired(post_id):
            listed = len(self.listed.get(post_id, {}))
            kept = self.changelog_comments.get(post_id, 0)
            if not got.post.comment_count == listed == kept:
                out.append(
                    f"{post_id}: comment_count {got.post.comment_count}, post_comments lists "
                    f"{listed}, changelog keeps {kept}"
                )
        return out
