"""Unit tests of the command service's directory: its state fed by `posts` events, own
writes and `post_comments` records, its store on disk, and the comment miss catch-up
against the raw `comments` ends (no broker: the end offsets are given)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from command_service.directory import Directory, DirectoryState, Entry
from command_service.directory_store import DiskStore
from mysocial import post_comments
from mysocial.config import Settings
from mysocial.errors import Unavailable
from mysocial.kafka import topics
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.tail import Batch
from mysocial.post_comments import CommentRecord
from mysocial.rocks import StateLocked
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res

POST = str(uuid.uuid4())


def comment_record(
    comment_id: str, src_offset: int, author: str | None = "alice", partition: int = 0
) -> CommentRecord:
    """A post_comments record of POST as the reader decodes it; author None = tombstone."""
    value = None
    if author is not None:
        value = res.Comment(
            comment_id=comment_id, post_id=POST, author_id=author, text="hi"
        ).SerializeToString()
    headers = [("src-partition", str(partition).encode()), ("src-offset", str(src_offset).encode())]
    return post_comments.decode(f"{POST}/{comment_id}".encode(), value, headers, partition)


def event(actor: str, kind: str, comment_id: str = "") -> ev.Event:
    e = ev.Event(event_id=uuid.uuid4().hex, actor_user_id=actor)
    if kind == "post_created":
        e.post_created.post_id = POST
    elif kind == "comment_added":
        e.comment_added.CopyFrom(ev.CommentAdded(post_id=POST, comment_id=comment_id, text="x"))
    else:
        e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=POST, comment_id=comment_id))
    return e


def created(post_id: str, author: str) -> ev.Event:
    e = ev.Event(event_id=uuid.uuid4().hex, actor_user_id=author)
    e.post_created.post_id = post_id
    return e


def test_a_live_record_then_its_tombstone() -> None:
    state = DirectoryState()
    cid = str(uuid.uuid4())
    state.apply_record(comment_record(cid, 4))
    assert state.comments[cid] == Entry("alice")
    state.apply_record(comment_record(cid, 5))  # a no-op event re-states it
    state.apply_record(comment_record(cid, 9, author=None))
    assert state.comments[cid] == Entry("alice", deleted=True)
    assert state.comment_positions == {0: 10}


def test_a_live_record_does_not_undo_a_deletion_recorded_ahead_of_the_reader() -> None:
    state = DirectoryState()
    cid = str(uuid.uuid4())
    state.apply(event("owner", "post_created"))
    state.apply(event("bob", "comment_added", cid))  # own write
    state.apply(event("owner", "comment_deleted", cid))  # own write: the post's author
    assert state.comments[cid].deleted
    state.apply_record(comment_record(cid, 3, author="bob"))  # the add, read late
    assert state.comments[cid] == Entry("bob", deleted=True)


def test_a_tombstone_for_an_unknown_comment_is_kept_as_deleted() -> None:
    """Its live record was compacted away: the commands answer NOT_FOUND either way,
    and a retried add of the same id (a tombstone again) cannot bring it back."""
    state = DirectoryState()
    cid = str(uuid.uuid4())
    state.apply_record(comment_record(cid, 2, author=None, partition=3))
    assert state.comments[cid] == Entry("", deleted=True)
    state.apply(event("alice", "comment_added", cid))  # a retried add, recorded
    assert state.comments[cid].deleted
    assert state.comment_positions == {3: 3}


def test_records_without_headers_move_no_position() -> None:
    state = DirectoryState()
    cid = str(uuid.uuid4())
    state.apply_record(post_comments.decode(f"{POST}/{cid}".encode(), None, None, 1))
    state.apply_record(comment_record(cid, 8, partition=1))
    state.apply_record(comment_record(cid, 6, partition=1))  # never moves back
    assert state.comment_positions == {1: 9}


def directory(settings: Settings, ends: dict[tuple[str, int], int], path: Path) -> Directory:
    """A Directory on a store in path, without reader or admin client: `_ends`
    answers `ends`."""
    d = Directory.__new__(Directory)
    d.settings = settings
    d.loop = asyncio.get_running_loop()
    d.store = DiskStore(path, cache_entries=100)
    d.state = DirectoryState(d.store.posts, d.store.comments)
    d.topic_posts = settings.topic(topics.POSTS)
    d.topic_comments = settings.topic(topics.COMMENTS)
    d.topic_post_comments = settings.topic(topics.POST_COMMENTS)
    d.positions = {}
    d._progress = asyncio.Event()
    d._queries = {}
    d._caught_up = True

    async def fixed_ends(topic: str) -> dict[tuple[str, int], int]:
        assert topic == d.topic_comments  # the raw events' ends, not post_comments'
        return ends

    d._ends = fixed_ends  # type: ignore[method-assign]
    return d


def test_a_comment_miss_waits_for_post_comments_to_reflect_the_raw_partition(
    tmp_path: Path,
) -> None:
    settings = Settings()
    partition = partition_for(POST.encode(), settings.copartitions)
    raw = settings.topic(topics.COMMENTS)
    cid = str(uuid.uuid4())

    async def scenario() -> None:
        d = directory(settings, {(raw, partition): 11, (raw, partition + 1): 50}, tmp_path)
        # The reader's own position in post_comments says nothing about `comments`.
        d.positions[(settings.topic(topics.POST_COMMENTS), partition)] = 1000
        lookup = asyncio.ensure_future(d.comment(POST, cid, 5.0))
        await asyncio.sleep(0.01)
        d._apply(batch([comment_record(str(uuid.uuid4()), 9, partition=partition)]))
        await asyncio.sleep(0.01)
        assert not lookup.done()  # offset 10 not reflected yet
        d._apply(batch([comment_record(cid, 10, author="bob", partition=partition)]))
        assert await asyncio.wait_for(lookup, 1) == Entry("bob")
        # Caught up to the end: an unknown comment is NOT_FOUND (None), at once.
        assert await d.comment(POST, str(uuid.uuid4()), 1.0) is None

    asyncio.run(scenario())


def test_a_comment_miss_the_projection_never_reaches_is_unavailable(tmp_path: Path) -> None:
    """The last event yields no record (a deleted post's, a dead letter): retry later."""
    settings = Settings()
    partition = partition_for(POST.encode(), settings.copartitions)
    raw = settings.topic(topics.COMMENTS)

    async def scenario() -> None:
        d = directory(settings, {(raw, partition): 11}, tmp_path)
        d._apply(batch([comment_record(str(uuid.uuid4()), 9, partition=partition)]))
        with pytest.raises(Unavailable) as raised:
            await d.comment(POST, str(uuid.uuid4()), 0.05)
        assert raised.value.retry_after_s == 1.0

    asyncio.run(scenario())


def batch(items: list[CommentRecord]) -> Batch[ev.Event | CommentRecord]:
    return Batch(list[ev.Event | CommentRecord](items), {})


def test_the_store_keeps_entries_offsets_and_positions_together(tmp_path: Path) -> None:
    """What a warm restart finds: every flushed entry, the offsets and comment positions
    written with it; entries past the cache come back from disk; reset forgets all."""
    store = DiskStore(tmp_path / "s", cache_entries=2)
    state = DirectoryState(store.posts, store.comments)
    posts = [str(uuid.uuid4()) for _ in range(5)]
    for i, pid in enumerate(posts):
        state.apply(created(pid, f"user{i}"))
    cid = str(uuid.uuid4())
    state.apply_record(comment_record(cid, 4, author="bob", partition=3))
    store.flush({("ns.posts", 0): 7}, state.comment_positions, caught_up=True)
    with pytest.raises(StateLocked):
        DiskStore(tmp_path / "s", cache_entries=2)  # one process per folder
    store.close()
    again = DiskStore(tmp_path / "s", cache_entries=2)
    assert [again.posts.get(p) for p in posts] == [Entry(f"user{i}") for i in range(5)]
    assert again.comments.get(cid) == Entry("bob")
    assert again.offsets() == {("ns.posts", 0): 7}
    assert again.comment_positions() == {3: 5}
    assert again.caught_up_at() is not None
    again.reset({"namespace": "ns."})
    assert again.posts.get(posts[0]) is None and again.offsets() == {}
    assert again.marker() == {"namespace": "ns."}
    again.close()
