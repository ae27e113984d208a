"""Unit tests of the query service's local store: layout, batches, the bounded caches."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from mysocial.config import Settings
from mysocial.rocks import StateLocked
from mysocial.v1 import query_service_pb2 as q
from query_service.models import ReadModel
from query_service.service import ReadSide, state_path
from query_service.store import Gone, PostView, QueryStore, decode_key, encode_key
from query_service.tailer import POST, Item
from tests.unit.test_query_model import T0, ids, record


def test_feed_keys_sort_as_the_tuples_do() -> None:
    keys = [(-T0, "b"), (-T0, "a"), (-(T0 + 5), "z"), (T0, "a"), (-(2**62), "x"), (0, "m")]
    assert sorted(keys) == [decode_key(k) for k in sorted(encode_key(k) for k in keys)]


def test_posts_survive_a_reopen_and_one_replica_owns_a_folder(tmp_path: Path) -> None:
    store = QueryStore(tmp_path / "s")
    with pytest.raises(StateLocked, match="MYSOCIAL_QUERY_REPLICA_ID"):
        QueryStore(tmp_path / "s")
    m = ReadModel("posts", "likes", "comments", store)
    a, b = ids(2)
    m.apply_post_record(a, record(a, "alice", T0, likes=3, likes_at=9), 4)
    m.apply_post_record(b, record(b, "bob", T0 + 1), 5)
    m.apply_post_record(b, None, 6)
    m.begin()
    m.apply_post_record(a, record(a, "alice", T0, likes=4, likes_at=10), 7)
    m.commit({("posts_with_counts", 2): 7})
    store.close()
    again = QueryStore(tmp_path / "s")
    assert again.offsets() == {("posts_with_counts", 2): 7}
    m2 = ReadModel("posts", "likes", "comments", again)
    view = m2.lookup(a)
    assert isinstance(view, PostView) and view.post.like_count == 4
    assert (view.version, view.likes_at, view.updates, view.author_id) == (7, 10, 1, "alice")
    assert m2.lookup(b) == Gone("bob", 6) and b in m2.deleted
    assert [p.post_id for p in m2.page("", None, 10)[0]] == [a]
    assert "bob" not in m2.by_author and "alice" in m2.by_author


def test_the_post_cache_is_bounded_and_reads_go_to_disk(tmp_path: Path) -> None:
    m = ReadModel("posts", "likes", "comments", QueryStore(tmp_path / "s"), cache_posts=3)
    posts = ids(10)
    for i, pid in enumerate(posts):
        m.apply_post_record(pid, record(pid, "a", T0 + i), i + 1)
    assert len(m.cache) == 3 and list(m.cache) == posts[-3:]
    assert m.get(posts[0]) is not None and list(m.cache)[-1] == posts[0]  # now hot
    page, _ = m.page("a", None, 10)
    assert [p.post_id for p in page] == posts[::-1]
    assert len(m.cache) == 3  # listings do not make posts hot


def test_the_change_index_is_bounded_and_a_cursor_behind_it_is_forgotten(tmp_path: Path) -> None:
    m = ReadModel("posts", "likes", "comments", QueryStore(tmp_path / "s"), change_index=3)
    posts = ids(5)
    for i, pid in enumerate(posts):
        m.apply_post_record(pid, record(pid, "a", T0 + i))
    assert len(m.changes) == 3 and m.floor == 2
    assert [pid for _, pid in m.changed_since(2)] == posts[2:]
    assert not m.forgotten(2) and m.forgotten(1)
    m.apply_post_record(posts[2], record(posts[2], "a", T0 + 2, likes=1))  # moves to the end
    assert [pid for _, pid in m.changed_since(3)] == [posts[3], posts[4], posts[2]]
    assert m.changes[posts[2]].created_seq == 3 and m.floor == 2


def test_a_feed_stream_behind_the_change_index_resyncs(tmp_path: Path) -> None:
    settings = Settings(query_state_dir=str(tmp_path))
    assert state_path(settings) == tmp_path / "query-0"

    async def scenario() -> None:
        side = ReadSide(settings)
        side.model.change_index = 2
        stream = side.watch_feed("", 10)
        first = q.WatchFeedResponse.FromString(await anext(stream))
        assert first.snapshot_complete and not first.HasField("post")
        posts = ids(4)
        items = [Item(POST, 0, i, pid, record(pid, "a", T0 + i), 0) for i, pid in enumerate(posts)]
        side.apply(items, {("posts_with_counts", 0): 4})
        got = [q.WatchFeedResponse.FromString(await anext(stream)) for _ in posts]
        assert [m.kind for m in got] == [q.FEED_EVENT_KIND_SNAPSHOT] * 4
        assert [m.post.post_id for m in got] == posts[::-1] and got[-1].snapshot_complete
        assert {m.skipped_updates for m in got} == {4}  # the 4 changes it could not be sent
        assert [m.version for m in got] == [4, 3, 2, 1]
        pid = posts[0]
        side.apply([Item(POST, 0, 4, pid, record(pid, "a", T0, likes=1), 0)])
        update = q.WatchFeedResponse.FromString(await anext(stream))  # caught up: one update
        assert update.kind == q.FEED_EVENT_KIND_UPDATED and update.post.like_count == 1
        assert side.store.offsets() == {("posts_with_counts", 0): 4}

    asyncio.run(scenario())


def test_comments_of_a_deleted_post_are_dropped_from_disk(tmp_path: Path) -> None:
    from tests.unit.test_query_model import comment_record

    store = QueryStore(tmp_path / "s")
    m = ReadModel("posts", "likes", "comments", store)
    pid, other = ids(2)
    m.apply_post_record(pid, record(pid, "owner", T0))
    m.begin()  # within one batch: a comment, then the post's tombstone, then a late one
    m.apply_comment_record(comment_record(pid, str(uuid.uuid4()), 0, "a"))
    m.apply_comment_record(comment_record(other, str(uuid.uuid4()), 1, "b"))
    m.apply_post_record(pid, None)
    m.apply_comment_record(comment_record(pid, str(uuid.uuid4()), 2, "late"))
    m.commit()
    assert pid not in m.comments and other in m.comments
    assert store.comment_positions() == {0: 3}
