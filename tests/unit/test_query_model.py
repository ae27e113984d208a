"""Unit tests of the query side's pure parts: read model, page tokens, stream queues."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from mysocial import post_comments
from mysocial.config import Settings
from mysocial.errors import InvalidArgument
from mysocial.kafka import topics
from mysocial.post_comments import CommentRecord
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from query_service import queries
from query_service.models import Change, FeedKey, ReadModel
from query_service.store import QueryStore
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


def comment_record(
    post_id: str,
    comment_id: str,
    src_offset: int,
    text: str | None = "hi",
    created_ms: int = T0,
    author: str = "u1",
    src_partition: int = 0,
) -> CommentRecord:
    """A post_comments record as the tailer decodes it; text None = tombstone."""
    value = None
    if text is not None:
        comment = res.Comment(comment_id=comment_id, post_id=post_id, author_id=author, text=text)
        comment.created_at.FromMilliseconds(created_ms)
        value = comment.SerializeToString()
    headers = [
        (post_comments.SRC_PARTITION, str(src_partition).encode()),
        (post_comments.SRC_OFFSET, str(src_offset).encode()),
    ]
    return post_comments.decode(f"{post_id}/{comment_id}".encode(), value, headers, src_partition)


_state: list[Path] = []


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path) -> Iterator[None]:
    """Each test's stores live in its own temporary folder."""
    _state.append(tmp_path)
    yield
    _state.pop()


def store() -> QueryStore:
    return QueryStore(_state[-1] / f"store-{uuid.uuid4().hex[:8]}")


def model(**options: int) -> ReadModel:
    return ReadModel("posts", "likes", "comments", store(), **options)


def query_settings() -> Settings:
    """Settings whose query store is in the test's folder (a new replica id each time)."""
    return Settings(query_state_dir=str(_state[-1]), query_replica_id=uuid.uuid4().hex[:8])


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


def texts(m: ReadModel, post_id: str) -> list[str]:
    return [c.text for c in m.comment_page(post_id, None, 100)[0]]


def test_comments_list_newest_first_as_the_records_say() -> None:
    m = model()
    pid = ids(1)[0]
    c1, c2, c3 = (str(uuid.uuid4()) for _ in range(3))
    m.apply_comment_record(comment_record(pid, c1, 0, "one", T0 + 1))
    m.apply_comment_record(comment_record(pid, c2, 1, "two", T0 + 2, author="u2"))
    m.apply_comment_record(comment_record(pid, c3, 2, "three", T0 + 3, author="u3"))
    m.apply_comment_record(comment_record(pid, c1, 3, "one", T0 + 1))  # no-op re-statement
    m.apply_post_record(pid, record(pid, "owner", T0))
    page, _ = m.comment_page(pid, None, 10)
    assert [c.text for c in page] == ["three", "two", "one"]
    assert page[1] == res.Comment(
        comment_id=c2, post_id=pid, author_id="u2", text="two", created_at=page[1].created_at
    )
    assert page[1].created_at.ToMilliseconds() == T0 + 2
    m.apply_comment_record(comment_record(pid, c2, 4, None))  # deleted (whoever may)
    assert texts(m, pid) == ["three", "one"]
    assert m.comment_positions == {0: 5}


def test_a_live_record_then_its_tombstone_leaves_nothing_behind() -> None:
    m = model()
    pid, cid = ids(1)[0], str(uuid.uuid4())
    m.apply_post_record(pid, record(pid, "owner", T0))
    assert m.apply_comment_record(comment_record(pid, cid, 7, "hello")) == pid
    assert texts(m, pid) == ["hello"]
    m.apply_comment_record(comment_record(pid, cid, 8, "hello, edited"))  # replaced in place
    assert texts(m, pid) == ["hello, edited"]
    assert m.apply_comment_record(comment_record(pid, cid, 9, None)) == pid
    assert texts(m, pid) == [] and pid not in m.comments  # no per-post leftovers
    assert m.comment_positions[0] == 10


def test_a_tombstone_for_an_unknown_comment_changes_nothing_but_the_position() -> None:
    m = model()
    pid = ids(1)[0]
    m.apply_post_record(pid, record(pid, "owner", T0))
    m.apply_comment_record(comment_record(pid, str(uuid.uuid4()), 3, None, src_partition=2))
    assert pid not in m.comments and m.comment_page(pid, None, 10) == ([], None)
    assert m.comment_positions == {2: 4}


def test_records_of_a_deleted_post_are_ignored() -> None:
    m = model()
    pid, cid = ids(1)[0], str(uuid.uuid4())
    m.apply_comment_record(comment_record(pid, cid, 0, "before"))  # may precede its post
    m.apply_post_record(pid, record(pid, "owner", T0))
    assert texts(m, pid) == ["before"]
    m.apply_post_record(pid, None)
    assert pid not in m.comments  # the post's comments go with its tombstone
    assert m.apply_comment_record(comment_record(pid, str(uuid.uuid4()), 5, "late")) == pid
    assert pid not in m.comments and m.comment_positions[0] == 6


def test_comment_pages_are_stable_while_comments_come_and_go() -> None:
    m = model()
    pid = ids(1)[0]
    m.apply_post_record(pid, record(pid, "owner", T0))
    cids = ids(7)
    for i, cid in enumerate(cids):  # c5 and c6 share a time: the id orders them
        m.apply_comment_record(comment_record(pid, cid, i, f"c{i}", T0 + min(i, 5)))
    page, cursor = m.comment_page(pid, None, 3)
    assert [c.text for c in page] == ["c5", "c6", "c4"] and cursor == (-(T0 + 4), cids[4])
    token = queries.encode_page_token("comments", pid, cursor)
    m.apply_comment_record(comment_record(pid, str(uuid.uuid4()), 7, "newer", T0 + 9))
    m.apply_comment_record(comment_record(pid, cids[4], 8, None))  # already shown
    m.apply_comment_record(comment_record(pid, cids[2], 9, None))  # not yet shown
    rest: list[str] = []
    after: FeedKey | None = queries.decode_page_token(token, "comments", pid)
    while after is not None:
        more, after = m.comment_page(pid, after, 3)
        rest += [c.text for c in more]
    assert rest == ["c3", "c1", "c0"]
    assert texts(m, pid) == ["newer", "c5", "c6", "c3", "c1", "c0"]
    assert m.comment_page(pid, None, 5)[1] is not None
    assert m.comment_page(pid, None, 6)[1] is None  # the last page has no token


def test_comment_positions_come_from_the_headers() -> None:
    pid, cid = ids(1)[0], str(uuid.uuid4())
    key = f"{pid}/{cid}".encode()
    record_ = post_comments.decode(key, None, [("src-partition", b"3"), ("src-offset", b"41")], 3)
    assert (record_.post_id, record_.comment_id, record_.comment) == (pid, cid, None)
    assert (record_.src_partition, record_.src_offset) == (3, 41)
    for headers in (None, [], [("src-offset", b"x")], [("src-partition", b"3")]):
        assert post_comments.decode(key, None, headers, 3).src_offset == -1
    for bad_key in (None, pid.encode(), f"/{cid}".encode()):
        with pytest.raises(ValueError):
            post_comments.decode(bad_key, None, None, 3)
    with pytest.raises(ValueError):
        post_comments.decode(key, b"\xff\xff", None, 3)
    m = model()
    m.apply_comment_record(record_)
    m.apply_comment_record(post_comments.decode(key, None, None, 3))  # moves nothing
    m.apply_comment_record(comment_record(pid, cid, 17, None, src_partition=3))  # older txn
    m.apply_comment_record(comment_record(pid, cid, 2, None, src_partition=1))
    assert m.comment_positions == {3: 42, 1: 3}


def test_tailer_decodes_post_comments_records_with_their_headers() -> None:
    from query_service.service import ReadSide
    from query_service.tailer import COMMENT, Tailer

    class Msg:
        def __init__(self, key: bytes, value: bytes | None, headers: object) -> None:
            self._key, self._value, self._headers = key, value, headers

        def key(self) -> bytes:
            return self._key

        def value(self) -> bytes | None:
            return self._value

        def headers(self) -> object:
            return self._headers

        def timestamp(self) -> tuple[int, int]:
            return (1, T0)

    settings = Settings()
    tailer = Tailer.__new__(Tailer)  # no reader: _decode needs only the topic table
    tailer.kinds = {settings.topic(topics.POST_COMMENTS): COMMENT}
    pid, cid = ids(2)
    value = comment_record(pid, cid, 0, "hi", T0 + 3).data
    topic = settings.topic(topics.POST_COMMENTS)
    headers = [("src-partition", b"5"), ("src-offset", b"12")]
    item = tailer._decode(topic, 5, 99, Msg(f"{pid}/{cid}".encode(), value, headers))
    assert item is not None and item.kind == COMMENT and item.key == pid
    assert tailer._decode(topic, 5, 100, Msg(b"no-slash", value, headers)) is None  # skipped
    side = ReadSide(query_settings())
    side.model.apply_post_record(pid, record(pid, "owner", T0, comments=1, comments_at=13))
    assert not side.model.applied(topics.COMMENTS, 5, 12, pid)
    side.apply([item])
    assert texts(side.model, pid) == ["hi"]
    assert side.model.applied(topics.COMMENTS, 5, 12, pid)
    assert not side.model.applied(topics.COMMENTS, 5, 13, pid)


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
    from mysocial.v1 import query_service_pb2 as q
    from query_service.service import ReadSide, _varint
    from query_service.streams import FeedSubscription

    for value in (0, 1, 127, 128, 300, 16_383, 16_384, 2**40):
        encoded = q.WatchFeedResponse(skipped_updates=value).SerializeToString()
        assert (b"\x20" + _varint(value) if value else b"") == encoded
    side = ReadSide(query_settings())
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
    from mysocial.v1 import query_service_pb2 as q
    from query_service.service import ReadSide
    from query_service.streams import FeedSubscription

    side = ReadSide(query_settings())
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
