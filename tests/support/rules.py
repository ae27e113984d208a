"""A harness for the processor's pure state transitions (dict store, no Kafka), shared by
the unit tests of the rules and of trending."""

from __future__ import annotations

import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.v1 import events_pb2 as ev
from processor.rules import DictStore, TaskState
from processor.trending import TrendingConfig

T0 = 1_800_000_000_000


CFG = TrendingConfig(half_life_s=3600, like_weight=1.0, comment_weight=3.0, min_distinct_users=2)


class Harness:
    def __init__(self) -> None:
        self.state = TaskState(DictStore(), CFG)
        self.offsets = {topics.POSTS_BY_ID: 0, topics.LIKES: 0, topics.COMMENTS: 0}

    def _event(self, actor: str, t: int) -> ev.Event:
        ts = Timestamp()
        ts.FromMilliseconds(t)
        return ev.Event(event_id=str(uuid.uuid4()), actor_user_id=actor, occurred_at=ts)

    def apply(self, source: str, event: ev.Event, t: int) -> None:
        offset = self.offsets[source]
        self.offsets[source] += 1
        self.state.apply(source, offset, event, t)

    def create(self, post: str, author: str, t: int = T0) -> None:
        e = self._event(author, t)
        e.post_created.CopyFrom(ev.PostCreated(post_id=post, caption="c"))
        self.apply(topics.POSTS_BY_ID, e, t)

    def delete(self, post: str, actor: str, t: int = T0) -> None:
        e = self._event(actor, t)
        e.post_deleted.post_id = post
        self.apply(topics.POSTS_BY_ID, e, t)

    def like(self, post: str, user: str, t: int = T0, unlike: bool = False) -> None:
        e = self._event(user, t)
        (e.post_unliked if unlike else e.post_liked).post_id = post
        self.apply(topics.LIKES, e, t)

    def comment(self, post: str, user: str, cid: str, t: int = T0) -> None:
        e = self._event(user, t)
        e.comment_added.CopyFrom(ev.CommentAdded(post_id=post, comment_id=cid, text="hi"))
        self.apply(topics.COMMENTS, e, t)

    def uncomment(self, post: str, user: str, cid: str, t: int = T0) -> None:
        e = self._event(user, t)
        e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=post, comment_id=cid))
        self.apply(topics.COMMENTS, e, t)

    def counts(self, post: str) -> tuple[int, int]:
        rec = self.state.post(post)
        assert rec is not None
        return rec.post.like_count, rec.post.comment_count

    def drain(self) -> tuple[dict[bytes, bytes | None], list[st.PostRecord]]:
        return self.state.drain()
