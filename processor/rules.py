"""Per-partition state transitions: the rules of invariants 1-3, as plain Python.

This is the specification. The processor runs the same rules compiled
(processor/native, through processor/core.py); tests/unit/test_native_core.py holds the two
equal record for record, and MYSOCIAL_PROCESSOR_CORE=python runs this one.

One TaskState owns the state of one partition number p (its posts, likes, comments
and repartitioned post events all live on partition p). It reads and writes through
a key-value Store; it never talks to Kafka, so every rule is unit-testable with a
dict. The engine asks it for the changed keys (the changelog) and the changed posts
(the output) once per commit, which is where coalescing happens: a post liked 500
times in a commit interval yields one output record.

Store keys (all under the task's partition):
    P<post_id>                 PostRecord    post, status, counts, trending mass
    E<post_id><user_id>        ENGAGER struct: liked, live comments, first engagement ms
    C<post_id><comment_id>     CommentRecord one comment (deleted ones remembered)
    Q<post_id><seq:8 bytes>    PendingEvent  events waiting for their post
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.log import get_logger
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor import trending
from processor.trending import TrendingConfig

log = get_logger("processor.rules")

LIVE = st.POST_STATUS_LIVE
PENDING = st.POST_STATUS_PENDING
DELETED = st.POST_STATUS_DELETED

MAX_PENDING_PER_POST = 100_000
ENGAGER = struct.Struct("<?qq")  # liked, live comments, first engagement (ms)


class Store(Protocol):
    """Key-value access to one task's state (keys without the task prefix)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class DictStore:
    """A Store in a dict: unit tests and the audit's recomputation."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]


class PendingOverflow(Exception):
    """Too many events queued for a post that never arrived."""


@dataclass
class Stats:
    applied: int = 0
    duplicates: int = 0
    queued: int = 0
    ignored_deleted: int = 0
    unauthorized: int = 0


@dataclass
class TaskState:
    """State of one partition, with a write-back cache of post records."""

    store: Store
    config: TrendingConfig = field(default_factory=TrendingConfig)
    posts: dict[str, st.PostRecord] = field(default_factory=dict)
    dirty_posts: set[str] = field(default_factory=set)
    # Posts whose output must be (re)published at the next commit.
    changed_posts: set[str] = field(default_factory=set)
    # Keys written since the last drain, for the changelog (None = deleted).
    changelog: dict[bytes, bytes | None] = field(default_factory=dict)
    # (post id, comment id) -> offset of the newest comment event on it since the last
    # drain: each becomes one post_comments record.
    comments_touched: dict[tuple[str, str], int] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    max_pending: int = MAX_PENDING_PER_POST

    # -- store access -------------------------------------------------------------
    def _post(self, post_id: str) -> st.PostRecord | None:
        rec = self.posts.get(post_id)
        if rec is None:
            raw = self.store.get(b"P" + post_id.encode())
            if raw is None:
                return None
            rec = st.PostRecord()
            rec.ParseFromString(raw)
            self.posts[post_id] = rec
        return rec

    def _put(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.store.delete(key)
        else:
            self.store.put(key, value)
        self.changelog[key] = value

    def _touch(self, post_id: str, output: bool = True) -> None:
        self.dirty_posts.add(post_id)
        if output:
            self.changed_posts.add(post_id)

    def post(self, post_id: str) -> st.PostRecord | None:
        """The post's record (read-only use)."""
        return self._post(post_id)

    # -- entry point --------------------------------------------------------------
    def apply(self, source: str, offset: int, event: ev.Event, time_ms: int) -> None:
        """Apply one valid event read at `offset` of `source` (a contract topic name)."""
        kind = event.WhichOneof("payload")
        if source == topics.POSTS_BY_ID:
            if kind == "post_created":
                self._post_created(event, offset, time_ms)
            else:
                self._post_event_or_queue(source, offset, event, time_ms)
            return
        self._post_event_or_queue(source, offset, event, time_ms)

    def apply_like(
        self, post_id: str, actor: str, liked: bool, offset: int, event: ev.Event, time_ms: int
    ) -> None:
        """apply() specialised for PostLiked/PostUnliked: most of the traffic."""
        rec = self.posts.get(post_id) or self._post(post_id)
        if rec is None or rec.status == PENDING:
            self._enqueue(post_id, rec, topics.LIKES, offset, event, time_ms)
            return
        if rec.status == DELETED:
            self.stats.ignored_deleted += 1
            return
        if offset >= rec.likes_applied_through:
            rec.likes_applied_through = offset + 1
        self._set_liked(rec, post_id, actor, liked, time_ms)
        self.dirty_posts.add(post_id)
        self.changed_posts.add(post_id)

    # -- posts --------------------------------------------------------------------
    def _post_created(self, event: ev.Event, offset: int, time_ms: int) -> None:
        created = event.post_created
        post_id = created.post_id
        rec = self._post(post_id)
        if rec is not None and rec.status in (LIVE, DELETED):
            self.stats.duplicates += 1  # a retried CreatePost, or a create after delete
            if rec.status == LIVE and event.actor_user_id == rec.post.author_id:
                self._adopt_earlier_creation(rec, time_ms)
            return
        if rec is None:
            rec = st.PostRecord()
            self.posts[post_id] = rec
        rec.status = LIVE
        post = rec.post
        post.post_id = post_id
        post.author_id = event.actor_user_id
        post.caption = created.caption
        del post.media_ids[:]
        post.media_ids.extend(m.media_id for m in created.media)
        del post.media[:]
        post.media.extend(created.media)
        post.created_at.FromMilliseconds(time_ms)
        rec.posts_applied_through = max(rec.posts_applied_through, offset + 1)
        rec.trending.epoch_ms = time_ms
        self.stats.applied += 1
        self._touch(post_id)
        self._replay_pending(post_id, rec)

    def _adopt_earlier_creation(self, rec: st.PostRecord, time_ms: int) -> None:
        """A retry of CreatePost carries the retry's time. Read in log order the original
        comes first; a record read again after a rebalance may put the retry first.
        The earliest attempt is the post's time either way, so the state does not
        depend on the order of reading (trending masses rescaled to the new epoch)."""
        if time_ms >= rec.post.created_at.ToMilliseconds():
            return
        rec.post.created_at.FromMilliseconds(time_ms)
        if rec.trending.epoch_ms > time_ms:
            trending.move_epoch(self.config, rec.trending, time_ms)
        self._touch(rec.post.post_id)

    def _post_deleted(self, event: ev.Event, rec: st.PostRecord, offset: int) -> None:
        post_id = event.post_deleted.post_id
        if event.actor_user_id != rec.post.author_id:
            self.stats.unauthorized += 1
            log.warning(
                "unauthorized_post_delete_ignored", post_id=post_id, actor=event.actor_user_id
            )
            return
        rec.status = DELETED
        rec.posts_applied_through = max(rec.posts_applied_through, offset + 1)
        # Keep only what is needed to ignore late events: no content, no counts.
        rec.ClearField("post")
        rec.ClearField("trending")
        rec.post.post_id = post_id
        self.stats.applied += 1
        self._touch(post_id)

    # -- dispatch for events that need their post ------------------------------
    def _post_event_or_queue(self, source: str, offset: int, event: ev.Event, time_ms: int) -> None:
        kind = event.WhichOneof("payload")
        post_id = getattr(event, kind).post_id  # type: ignore[arg-type]
        rec = self._post(post_id)
        if rec is None or rec.status == PENDING:
            self._enqueue(post_id, rec, source, offset, event, time_ms)
            return
        if rec.status == DELETED:
            self.stats.ignored_deleted += 1
            return
        self._apply_live(rec, source, offset, event, time_ms)

    def _apply_live(
        self, rec: st.PostRecord, source: str, offset: int, event: ev.Event, time_ms: int
    ) -> None:
        kind = event.WhichOneof("payload")
        post_id = rec.post.post_id
        if kind == "post_deleted":
            self._post_deleted(event, rec, offset)
            return
        if source == topics.LIKES:
            rec.likes_applied_through = max(rec.likes_applied_through, offset + 1)
        elif source == topics.COMMENTS:
            rec.comments_applied_through = max(rec.comments_applied_through, offset + 1)
        actor = event.actor_user_id
        if kind == "post_liked":
            self._set_liked(rec, post_id, actor, True, time_ms)
        elif kind == "post_unliked":
            self._set_liked(rec, post_id, actor, False, time_ms)
        elif kind == "comment_added":
            self._comment_added(rec, event, time_ms)
        elif kind == "comment_deleted":
            self._comment_deleted(rec, event)
        if kind in ("comment_added", "comment_deleted"):
            comment = (post_id, getattr(event, kind).comment_id)
            self.comments_touched[comment] = max(offset, self.comments_touched.get(comment, offset))
        self._touch(post_id)

    # -- likes --------------------------------------------------------------------
    def _update_engager(
        self,
        rec: st.PostRecord,
        post_id: str,
        user: str,
        time_ms: int,
        liked: bool | None,
        comments: int,
    ) -> bool:
        """Change a user's like flag and/or live comment count; returns whether the
        user liked the post before (the record may change only its first-engagement
        time, which is not a change of the like: see _set_liked).

        This runs for nearly every input event, so the record is a fixed 17-byte struct
        (liked, live comments, first engagement ms) rather than a protobuf message.
        """
        key = b"E" + post_id.encode() + user.encode()
        raw = self.store.get(key)
        if raw is None:
            old = None
            new_liked, new_comments, first = False, 0, time_ms
        else:
            old = ENGAGER.unpack(raw)
            new_liked, new_comments, first = old
            if (liked or comments > 0) and time_ms < first:
                first = time_ms  # the earliest engagement, whichever topic was read first
        if liked is not None:
            new_liked = liked
        new_comments = max(0, new_comments + comments)
        new = (new_liked, new_comments, first)
        was_liked = old is not None and old[0]
        if old == new:
            rec.trending.ignored_events += 1  # a repeat: changes nothing
            return was_liked
        if old is None and not new_liked and new_comments == 0:
            rec.trending.ignored_events += 1
            return was_liked  # unlike without like: nothing to remember
        cfg = self.config
        if user == rec.post.author_id:
            rec.trending.ignored_events += 1  # self-engagement never counts for trending
        else:
            trending.change_role(
                cfg,
                rec.trending,
                trending.role_of(old[0], old[1]) if old is not None else trending.Role.NONE,
                trending.role_of(new_liked, new_comments),
                first,
                old[2] if old is not None else None,
            )
        self._put(key, ENGAGER.pack(*new))
        return was_liked

    def _set_liked(
        self, rec: st.PostRecord, post_id: str, user: str, liked: bool, time_ms: int
    ) -> None:
        # The count moves only when the flag does. A repeated like dated earlier than
        # the first one read (clock skew between command services, or a record read
        # again after a rebalance) only moves the first-engagement time.
        if self._update_engager(rec, post_id, user, time_ms, liked, 0) != liked:
            rec.post.like_count += 1 if liked else -1
            self.stats.applied += 1
        else:
            self.stats.duplicates += 1

    # -- comments -----------------------------------------------------------------
    def _comment_key(self, post_id: str, comment_id: str) -> bytes:
        return b"C" + post_id.encode() + comment_id.encode()

    def _comment_added(self, rec: st.PostRecord, event: ev.Event, time_ms: int) -> None:
        added = event.comment_added
        key = self._comment_key(added.post_id, added.comment_id)
        if self.store.get(key) is not None:
            self.stats.duplicates += 1  # retried add, or an attempt to revive a deleted one
            rec.trending.ignored_events += 1
            return
        comment = st.CommentRecord(
            author_id=event.actor_user_id, created_at_ms=time_ms, text=added.text
        )
        self._put(key, comment.SerializeToString())
        rec.post.comment_count += 1
        self._update_engager(rec, added.post_id, event.actor_user_id, time_ms, None, +1)
        self.stats.applied += 1

    def _comment_deleted(self, rec: st.PostRecord, event: ev.Event) -> None:
        deleted = event.comment_deleted
        key = self._comment_key(deleted.post_id, deleted.comment_id)
        raw = self.store.get(key)
        if raw is None:
            self.stats.duplicates += 1  # unknown comment: nothing changes
            return
        comment = st.CommentRecord()
        comment.ParseFromString(raw)
        if comment.deleted:
            self.stats.duplicates += 1
            return
        actor = event.actor_user_id
        if actor not in (comment.author_id, rec.post.author_id):
            self.stats.unauthorized += 1
            log.warning(
                "unauthorized_comment_delete_ignored",
                post_id=deleted.post_id,
                comment_id=deleted.comment_id,
                actor=actor,
            )
            return
        comment.deleted = True
        comment.text = ""  # a deleted comment's words are not kept
        self._put(key, comment.SerializeToString())
        rec.post.comment_count -= 1
        self._update_engager(
            rec, deleted.post_id, comment.author_id, comment.created_at_ms, None, -1
        )
        self.stats.applied += 1

    # -- events waiting for their post -------------------------------------------
    def _enqueue(
        self,
        post_id: str,
        rec: st.PostRecord | None,
        source: str,
        offset: int,
        event: ev.Event,
        time_ms: int,
    ) -> None:
        if rec is None:
            rec = st.PostRecord(status=PENDING)
            self.posts[post_id] = rec
        if rec.pending_next - rec.pending_first >= self.max_pending:
            raise PendingOverflow(f"more than {self.max_pending} events wait for post {post_id}")
        pending = st.PendingEvent(
            source=source, offset=offset, event=event.SerializeToString(), accepted_at_ms=time_ms
        )
        self._put(_queue_key(post_id, rec.pending_next), pending.SerializeToString())
        rec.pending_next += 1
        self.stats.queued += 1
        self._touch(post_id, output=False)

    def _replay_pending(self, post_id: str, rec: st.PostRecord) -> None:
        """The post arrived: apply its queued events in their original order."""
        for seq in range(rec.pending_first, rec.pending_next):
            key = _queue_key(post_id, seq)
            raw = self.store.get(key)
            self._put(key, None)
            if raw is None:
                continue
            pending = st.PendingEvent()
            pending.ParseFromString(raw)
            event = ev.Event()
            event.ParseFromString(pending.event)
            if rec.status == LIVE:
                self._apply_live(rec, pending.source, pending.offset, event, pending.accepted_at_ms)
        rec.pending_first = rec.pending_next = 0

    # -- commit support -----------------------------------------------------------
    def drain_comments(self) -> list[tuple[int, str, str, bytes | None]]:
        """Touched comments in source offset order: (offset in `comments`, post id,
        comment id, post_comments value (a mysocial.v1.Comment) or None when deleted or
        unknown). Call before drain()."""
        out: list[tuple[int, str, str, bytes | None]] = []
        for (post_id, comment_id), offset in self.comments_touched.items():
            raw = self.store.get(self._comment_key(post_id, comment_id))
            value = None
            if raw is not None:
                record = st.CommentRecord.FromString(raw)
                if not record.deleted:
                    comment = res.Comment(
                        comment_id=comment_id,
                        post_id=post_id,
                        author_id=record.author_id,
                        text=record.text,
                    )
                    comment.created_at.FromMilliseconds(record.created_at_ms)
                    value = comment.SerializeToString()
            out.append((offset, post_id, comment_id, value))
        self.comments_touched = {}
        out.sort(key=lambda c: c[0])
        return out

    def drain(self) -> tuple[dict[bytes, bytes | None], list[st.PostRecord]]:
        """Changed keys (for changelog and store) and changed posts (for output).

        Post records are serialized here once per commit, however many events
        touched them.
        """
        for post_id in self.dirty_posts:
            rec = self.posts[post_id]
            self._put(b"P" + post_id.encode(), rec.SerializeToString())
        outputs = [self.posts[p] for p in self.changed_posts]
        changelog, self.changelog = self.changelog, {}
        self.dirty_posts = set()
        self.changed_posts = set()
        return changelog, outputs

    def forget_cache(self) -> None:
        """Drop cached records (after an aborted transaction the store is the truth)."""
        self.posts.clear()
        self.dirty_posts.clear()
        self.changed_posts.clear()
        self.changelog.clear()
        self.comments_touched.clear()

    def trim_cache(self, max_posts: int) -> None:
        """Bound the post cache (clean entries only; call right after drain)."""
        if len(self.posts) > max_posts:
            self.posts.clear()


def _queue_key(post_id: str, seq: int) -> bytes:
    return b"Q" + post_id.encode() + seq.to_bytes(8, "big")
