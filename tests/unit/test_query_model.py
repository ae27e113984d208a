"""Unit tests of the query side's pure parts: read model, page tokens, stream queues."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.errors import InvalidArgument
from mysocial.kafka import topics
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from query_service import queries
from query_service.models import Change, ReadModel
from query_service.streams import Hub, Subscription

T0 = 1_800_000_000_000


def record(
    post_id: str,
    author: str,
    created_ms: int,
    likes: int = 0,
    comments: int = 0,
    likes_at: int = 0,
    comments_at: int = 0,
) -> ev.PostWithCounts:
    ts = Timestamp()
    ts.FromMilliseconds(created_ms)
    post = res.Post(
        post_id=post_id, author_id=author, created_at=ts, like_count=likes, comment_count=comments
    )
    return ev.PostWithCounts(
        post=post,
        posts_applied_through=1,
        likes_applied_through=likes_at,
        comments_applied_through=comments_at,
    )


def comment_event(
    actor: str, post_id: str, comment_id: str, text: str = "hi", delete: bool = False
) -> ev.Event:
    e = ev.Event(event_id=uuid.uuid4().hex, actor_user_id=actor)
    if delete:
        e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=post_id, comment_id=comment_id))
    else:
        e.comment_added.CopyFrom(ev.CommentAdded(post_id=post_id, comment_id=comment_id, text=text))
    return e


def model() -> ReadModel:
    return ReadModel("posts", "likes", "comments")


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def test_feed_pages_newest_first_without_repeats_while_posts_arrive() -> None:
    m = model()
    posts = ids(10)
    for i, pid in enumerate(posts):
        m.apply_post_record(pid, record(pid, "a" if i % 2 else "b", T0 + i))
    page, cursor = m.page("", None, 4)
    assert [p.post_id for p in page] == posts[9:5:-1]
    newer = str(uuid.uuid4())
    m.apply_post_record(newer, record(newer, "a", T0 + 100))  # arrives mid-paging
    rest: list[str] = []
    while cursor is not None:
        more, cursor = m.page("", cursor, 4)
        rest += [p.post_id for p in more]
    assert rest == posts[5::-1]
    by_a, _ = m.page("a", None, 10)
    assert [p.post_id for p in by_a] == [newer, *posts[9::-2]]


def test_tombstone_removes_a_post_everywhere_for_good() -> None:
    m = model()
    pid = ids(1)[0]
    assert m.apply_post_record(pid, record(pid, "a", T0)) == Change.CREATED
    assert m.apply_post_record(pid, record(pid, "a", T0, likes=1)) == Change.UPDATED
    assert m.apply_post_record(pid, None) == Change.DELETED
    assert m.apply_post_record(pid, None) is None
    assert m.get(pid) is None and m.page("", None, 10)[0] == [] and "a" not in m.by_author
    assert m.apply_post_record(pid, record(pid, "a", T0)) is None  # never comes back
    assert m.applied(topics.LIKES, 0, 99, pid)  # deletion is terminal for read-your-writes


def test_comments_list_newest_first_and_honor_who_may_delete() -> None:
    m = model()
    pid = ids(1)[0]
    c1, c2, c3 = (str(uuid.uuid4()) for _ in range(3))
    m.apply_comment_event(0, 0, comment_event("u1", pid, c1, "one"), T0 + 1)
    m.apply_comment_event(0, 1, comment_event("u2", pid, c2, "two"), T0 + 2)
    m.apply_comment_event(0, 2, comment_event("u3", pid, c3, "three"), T0 + 3)
    m.apply_comment_event(0, 3, comment_event("u1", pid, c1, "again"), T0 + 4)  # retry: ignored
    m.apply_post_record(pid, record(pid, "owner", T0))
    m.apply_comment_event(0, 4, comment_event("stranger", pid, c2, delete=True), T0 + 5)
    page, _ = m.comment_page(pid, None, 10)
    assert [c.text for c in page] == ["three", "two", "one"]  # stranger may not delete
    m.apply_comment_event(0, 5, comment_event("owner", pid, c2, delete=True), T0 + 6)
    m.apply_comment_event(0, 6, comment_event("u3", pid, c3, delete=True), T0 + 7)
    page, _ = m.comment_page(pid, None, 10)
    assert [c.text for c in page] == ["one"]
    m.apply_comment_event(0, 7, comment_event("u3", pid, c3, "revived"), T0 + 8)
    assert [c.text for c in m.comment_page(pid, None, 10)[0]] == ["one"]
    assert m.comment_positions[0] == 8


def test_post_author_delete_counts_even_if_the_post_arrives_later() -> None:
    m = model()
    pid, cid = ids(1)[0], str(uuid.uuid4())
    m.apply_comment_event(0, 0, comment_event("u1", pid, cid), T0)
    m.apply_comment_event(0, 1, comment_event("owner", pid, cid, delete=True), T0 + 1)
    m.apply_post_record(pid, record(pid, "owner", T0))
    assert m.comment_page(pid, None, 10)[0] == []


def test_read_your_writes_conditions() -> None:
    m = model()
    pid = ids(1)[0]
    assert not m.applied(topics.POSTS, 0, 0, pid)
    m.apply_post_record(pid, record(pid, "a", T0, likes_at=5, comments_at=3))
    assert m.applied(topics.POSTS, 0, 0, pid)
    assert m.applied(topics.LIKES, 2, 4, pid) and not m.applied(topics.LIKES, 2, 5, pid)
    assert not m.applied(topics.COMMENTS, 1, 2, pid)  # counts applied, listing not yet
    m.comment_positions[1] = 3
    assert m.applied(topics.COMMENTS, 1, 2, pid)


def test_waiters_wake_when_their_condition_holds() -> None:
    async def scenario() -> None:
        m = model()
        pid = ids(1)[0]
        fut = m.wait_until(pid, lambda: m.applied(topics.LIKES, 0, 3, pid))
        m.apply_post_record(pid, record(pid, "a", T0, likes_at=2))
        m.publish([], [pid])
        assert not fut.done()
        m.apply_post_record(pid, record(pid, "a", T0, likes_at=4))
        m.publish([], [pid])
        await asyncio.wait_for(fut, 1)
        assert not m.waiters

    asyncio.run(scenario())


def test_page_rules() -> None:
    assert (
        queries.page_size(0) == 20 and queries.page_size(500) == 100 and queries.page_size(7) == 7
    )
    with pytest.raises(InvalidArgument):
        queries.page_size(-1)
    pid = str(uuid.uuid4())
    token = queries.encode_page_token("posts", "alice", (-T0, pid))
    assert queries.decode_page_token(token, "posts", "alice") == (-T0, pid)
    for bad in ("garbage", token[:-4], queries.encode_page_token("posts", "bob", (-T0, pid))):
        with pytest.raises(InvalidArgument):
            queries.decode_page_token(bad, "posts", "alice")
    with pytest.raises(InvalidArgument, match="at most 100"):
        queries.post_ids([str(uuid.uuid4()) for _ in range(101)])
    assert queries.post_ids([pid, pid]) == [pid]


def test_coalescing_queue_keeps_latest_kind_and_counts_skips() -> None:
    sub = Subscription(capacity=10)
    sub.offer(Change.CREATED, "p1")
    sub.offer(Change.UPDATED, "p1")
    sub.offer(Change.UPDATED, "p1")
    sub.offer(Change.UPDATED, "p2")
    taken = sub.take()
    assert [(k, p.change, p.skipped) for k, p in taken] == [
        ("p1", Change.CREATED, 2),
        ("p2", Change.UPDATED, 0),
    ]
    sub.offer(Change.UPDATED, "p3")
    sub.offer(Change.DELETED, "p3")
    assert sub.take()[0][1].change == Change.DELETED


def test_a_reader_too_far_behind_is_switched_to_resync() -> None:
    sub = Subscription(capacity=3)
    for i in range(3):
        sub.offer(Change.UPDATED, f"p{i}")
    sub.offer(Change.UPDATED, "p9")  # one more distinct post than the queue holds
    assert sub.resync and not sub.pending
    sub.offer(Change.UPDATED, "p10")
    assert sub.resync_skipped == 5
    assert len(sub.pending) == 0  # memory stays bounded whatever arrives


def test_hub_routes_by_post_and_wakes_feeds_once_per_batch() -> None:
    hub = Hub(capacity=10)
    feed, alice, bob = hub.watch_feed("", 0), hub.watch_feed("alice", 0), hub.watch_feed("bob", 0)
    post = hub.watch_posts(["p1"])
    hub.on_changes([(Change.CREATED, "p1"), (Change.UPDATED, "p1")], {"p1": "alice"})
    assert list(post.pending) == ["p1"]
    assert feed.wakeup.is_set() and alice.wakeup.is_set() and not bob.wakeup.is_set()
    hub.unsubscribe(post, ["p1"])
    hub.unsubscribe_feed(alice)
    assert not hub.by_post and "alice" not in hub.by_author and len(hub) == 2


def test_change_index_lists_each_post_once_at_its_newest_change() -> None:
    m = model()
    a, b = ids(2)
    m.apply_post_record(a, record(a, "x", T0))
    cursor = m.seq
    m.apply_post_record(b, record(b, "x", T0 + 1))
    m.apply_post_record(a, record(a, "x", T0, likes=1))
    m.apply_post_record(a, record(a, "x", T0, likes=2))
    assert [pid for _, pid in m.changed_since(cursor)] == [b, a]
    m.apply_post_record(b, None)
    assert [pid for _, pid in m.changed_since(cursor)] == [a, b] and b in m.deleted_at
    assert m.posts[a].updates == 2


def test_feed_skipped_updates_count_what_a_reader_missed() -> None:
    from query_service.streams import FeedSubscription

    sub = FeedSubscription("")
    assert sub.skipped("p", 3) == 0  # first time: nothing known
    assert sub.skipped("p", 4) == 0
    assert sub.skipped("p", 9) == 4


def test_feed_updates_are_written_as_protobuf_would_encode_them() -> None:
    from mysocial.config import Settings
    from mysocial.v1 import query_service_pb2 as q
    from query_service.service import ReadSide, _varint
    from query_service.streams import FeedSubscription

    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 2**40):
        encoded = q.WatchFeedResponse(skipped_updates=value).SerializeToString()
        assert (b"\x20" + _varint(value) if value else b"") == encoded
    side = ReadSide(Settings())
    pid = str(uuid.uuid4())
    first = record(pid, "alice", T0, likes=1)
    first.post.caption = "x" * 300  # a length prefix of two bytes
    side.model.apply_post_record(pid, first)
    sub = FeedSubscription("")
    created = side._feed_bytes(pid, "", 0, sub)
    assert created is not None
    assert q.WatchFeedResponse.FromString(created) == q.WatchFeedResponse(
        kind=q.FEED_EVENT_KIND_CREATED, post=first.post
    )
    seen = side.model.seq
    for likes in (2, 3, 4):
        side.model.apply_post_record(pid, record(pid, "alice", T0, likes=likes))
    updated = side._feed_bytes(pid, "", seen, sub)
    assert updated is not None
    assert q.WatchFeedResponse.FromString(updated) == q.WatchFeedResponse(
        kind=q.FEED_EVENT_KIND_UPDATED,
        post=record(pid, "alice", T0, likes=4).post,
        skipped_updates=2,
    )
    assert side._feed_bytes(pid, "bob", seen, sub) is None  # another author's feed
    side.model.apply_post_record(pid, None)
    deleted = side._feed_bytes(pid, "", seen, sub)
    assert deleted is not None
    assert q.WatchFeedResponse.FromString(deleted) == q.WatchFeedResponse(
        kind=q.FEED_EVENT_KIND_DELETED, post=res.Post(post_id=pid)
    )


def test_stream_messages_carry_the_records_version() -> None:
    """Version = 1 + the posts_with_counts offset: on snapshots, updates (the feed's
    pre-serialized bytes too) and deletions, so a reconnecting client can drop stale
    states."""
    from mysocial.config import Settings
    from mysocial.v1 import query_service_pb2 as q
    from query_service.service import ReadSide
    from query_service.streams import FeedSubscription

    side = ReadSide(Settings())
    pid, other = ids(2)
    side.model.apply_post_record(other, record(other, "bob", T0 - 1), 3)
    side.model.apply_post_record(pid, record(pid, "alice", T0), 7)
    assert side._post_message(pid, 0).version == 7
    snapshot = side._feed_snapshot("", 10, 0)
    assert [(m.post.post_id, m.version) for m in snapshot] == [(pid, 7), (other, 3)]
    seen = side.model.seq
    side.model.apply_post_record(pid, record(pid, "alice", T0, likes=1), 12)
    sub = FeedSubscription("")
    updated = side._feed_bytes(pid, "", seen, sub)
    assert updated is not None and q.WatchFeedResponse.FromString(updated).version == 12
    assert side._post_message(pid, 0).version == 12
    side.model.apply_post_record(pid, None, 20)
    deleted = side._feed_bytes(pid, "", seen, sub)
    assert deleted is not None and q.WatchFeedResponse.FromString(deleted).version == 20
    message = side._post_message(pid, 0)
    assert message.deleted and message.version == 20
    # A tombstone of a post never seen: deleted, version unknown (deletion is final).
    never = str(uuid.uuid4())
    side.model.apply_post_record(never, None, 30)
    assert side._post_message(never, 0).deleted and side._post_message(never, 0).version == 0
