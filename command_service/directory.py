"""What the write side must know to reject wrong commands: which posts and comments
exist, who wrote them, and whether they were deleted.

Each command-service worker keeps this directory in its own RocksDB with its hot
entries in memory (command_service.directory_store), fed by its own reader of `posts`
and of the processor's `post_comments` projection (kept forever, unlike the raw
`comments` events: 7 days), read_committed, and by its own acknowledged writes (so a
process sees what it just wrote). The store keeps the offsets it reflects: a restart
reads on from them (warm) unless mysocial.kafka.warm_start finds the store unusable.
Then it is rebuilt (cold): posts from the compacted `posts_with_counts` and `posts`
only past the processor's progress (command_service.directory_snapshot), or `posts`
from the beginning while the processor has none. A lookup that misses may
be a write acknowledged a moment ago by another process: the directory then asks the
broker for the current end of the relevant partitions and waits until it got there
before answering NOT_FOUND. For posts that is the reader's position in `posts`; for
comments it is how far the `post_comments` records seen reflect the raw `comments`
partition (their `src-offset` header), so such a miss also waits for the processor.
That makes "a post is likeable the moment CreatePost returned" hold across processes
and instances, while hits (the common case) cost a cache or RocksDB lookup. A deletion made
through another process is seen once the reader has consumed it, normally within
milliseconds; a like slipping into that window is harmless because the processor
ignores events for deleted posts.

A comment miss can wait in vain: an event that yields no `post_comments` record (one
on a deleted post, one waiting for its post, one dead-lettered) leaves the position
short of the partition's end until a later comment event there is applied, and a
deleted comment's tombstone, once compaction removed it, may have carried the highest
offset. Such a lookup ends UNAVAILABLE with RetryInfo (as when Kafka is away), never a
wrong NOT_FOUND; lookups of comments the directory knows are not affected.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException, Message

from command_service.directory_snapshot import load_posts, posts_start
from command_service.directory_store import DiskStore, Entry, MemoryTable, Table
from mysocial import post_comments
from mysocial.config import Settings
from mysocial.errors import Unavailable
from mysocial.events import InvalidEvent, check
from mysocial.kafka import LONG_POLL_MS, topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.reader import end_offsets
from mysocial.kafka.tail import Batch, ReaderFailed, TailReader
from mysocial.kafka.warm_start import plan
from mysocial.log import get_logger
from mysocial.post_comments import CommentRecord
from mysocial.rocks import StateLocked
from mysocial.v1 import events_pb2 as ev

__all__ = ["Directory", "DirectoryState", "Entry"]

log = get_logger("command.directory")

# Version of directory_store's layout: a store written in another is rebuilt.
LAYOUT = 1
# Cold start: how long to wait for the processor's progress (then `posts` from the
# start), and for reading posts_with_counts to its end.
SNAPSHOT_WAIT_S = 10.0
SNAPSHOT_TIMEOUT_S = 600.0


@dataclass
class _Query:
    """A single-flight request for partition end offsets."""

    future: asyncio.Future[dict[tuple[str, int], int]]
    started: bool = False


@dataclass
class DirectoryState:
    """The pure part: applying events and post_comments records (also used by unit tests)."""

    posts: Table = field(default_factory=MemoryTable)
    comments: Table = field(default_factory=MemoryTable)
    # `comments` partition -> 1 + the newest src-offset of the post_comments records
    # applied: every comment event of that partition before it is reflected here.
    comment_positions: dict[int, int] = field(default_factory=dict)

    def apply_record(self, record: CommentRecord) -> None:
        """A post_comments record. Deletion is final (the processor never revives a
        comment), so a live record never undoes a deletion this process recorded ahead
        of the reader. A tombstone of a comment not seen (its live record compacted
        away) is kept as deleted, author unknown: commands answer NOT_FOUND for it at
        once, as a directory that saw the comment live would."""
        if record.src_offset >= 0:
            position = self.comment_positions.get(record.src_partition, 0)
            self.comment_positions[record.src_partition] = max(position, record.src_offset + 1)
        known = self.comments.get(record.comment_id)
        if record.comment is not None:
            if known is None:
                self.comments.put(record.comment_id, Entry(sys.intern(record.comment.author_id)))
        elif known is None or not known.deleted:
            self.comments.put(record.comment_id, Entry(known.author if known else "", True))

    def apply(self, event: ev.Event) -> None:
        """An event: read from `posts`, or written by this process (any topic)."""
        kind = event.WhichOneof("payload")
        actor = event.actor_user_id
        if kind == "post_created":
            if self.posts.get(event.post_created.post_id) is None:
                self.posts.put(event.post_created.post_id, Entry(actor))
        elif kind == "post_deleted":
            post = self.posts.get(event.post_deleted.post_id)
            if post is not None and post.author == actor and not post.deleted:
                self.posts.put(event.post_deleted.post_id, Entry(post.author, True))
        elif kind == "comment_added":
            if self.comments.get(event.comment_added.comment_id) is None:
                self.comments.put(event.comment_added.comment_id, Entry(actor))
        elif kind == "comment_deleted":
            cid = event.comment_deleted.comment_id
            comment = self.comments.get(cid)
            post = self.posts.get(event.comment_deleted.post_id)
            if comment is not None and actor in (comment.author, post.author if post else None):
                self.comments.put(cid, Entry(comment.author, True))


def open_store(settings: Settings, slots: int = 64) -> DiskStore:
    """The first store folder no other process holds: each worker and replica on a
    host gets one of its own, and a restarted worker usually finds the one it left."""
    base = Path(settings.command_state_dir or settings.processor_state_dir)
    for slot in range(slots):
        try:
            return DiskStore(
                base / f"{settings.topic_namespace}command-{slot}", settings.command_directory_cache
            )
        except StateLocked:
            continue
    raise StateLocked(f"all {slots} command directory folders under {base} are in use")


class Directory:
    """DirectoryState kept current from Kafka, with catch-up on misses.

    Its reader is a mysocial.kafka.tail.TailReader: if it dies, `failure` completes
    and the command service stops (the directory would otherwise stop moving while
    lookups kept answering from it).
    """

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.store = open_store(settings)
        self.state = DirectoryState(self.store.posts, self.store.comments)
        self.topic_posts = settings.topic(topics.POSTS)
        self.topic_comments = settings.topic(topics.COMMENTS)  # raw events: their ends
        self.topic_post_comments = settings.topic(topics.POST_COMMENTS)
        self.positions: dict[tuple[str, int], int] = {}
        self._progress = asyncio.Event()
        self._queries: dict[str, _Query] = {}
        self._started = time.monotonic()
        self._start_kind = ""
        self._caught_up = False
        self.snapshot_records = 0
        self.reader: TailReader[ev.Event | CommentRecord] = self._reader({})
        self.admin = kafka_connection(settings).admin()  # end-offset queries, off the reader

    def _reader(self, starts: dict[tuple[str, int], int]) -> TailReader[ev.Event | CommentRecord]:
        return TailReader(
            "directory-reader",
            self.loop,
            kafka_connection(self.settings),
            [self.topic_posts, self.topic_post_comments],
            self._decode,
            self._apply,
            self._loaded,
            starts=starts,
            consumer_config={
                "group.id": f"{self.settings.topic('mysocial.command-directory')}.unused",
                "fetch.wait.max.ms": LONG_POLL_MS,
            },
        )

    @property
    def failure(self) -> asyncio.Future[BaseException]:
        """Completes when the reader died (it logged why)."""
        return self.reader.failure

    async def start(self) -> None:
        """Decide warm or cold (admin requests, off the loop), then start reading."""
        self._started = time.monotonic()
        store = self.store
        try:
            decided = await asyncio.to_thread(
                plan,
                kafka_connection(self.settings),
                LAYOUT,
                [self.topic_posts, self.topic_post_comments],
                [self.topic_post_comments],
                self.settings.topic_namespace,
                store.marker(),
                store.offsets(),
                store.caught_up_at(),
            )
        except Exception as exc:  # as when the reader dies: one error line, exit 1
            log.exception("kafka_reader_failed", reader="directory-start", error=repr(exc))
            raise ReaderFailed(str(exc)) from exc
        if decided.cold_reason:
            self._start_kind = "cold"
            log.info("directory_rebuilding", path=str(store.path), reason=decided.cold_reason)
            store.reset(decided.marker)
            self.positions = await asyncio.to_thread(self._load_snapshot)
        else:
            self._start_kind = "warm"
            self.positions = dict(decided.starts)
            self.state.comment_positions = store.comment_positions()
        self.reader = self._reader(dict(self.positions))
        self.reader.start()

    def _load_snapshot(self) -> dict[tuple[str, int], int]:
        """Cold start: posts from posts_with_counts (directory_snapshot); returns where
        to read `posts` from ({}: from the beginning). Blocking: run it off the loop."""
        started = time.monotonic()
        starts, why_not = posts_start(self.settings, SNAPSHOT_WAIT_S)
        if not starts:
            log.info("directory_snapshot_skipped", reason=why_not, then="posts from the start")
            return {}
        try:
            self.snapshot_records = load_posts(
                self.settings,
                self.state.posts,
                lambda: self.store.flush({}, {}),
                SNAPSHOT_TIMEOUT_S,
            )
        except (KafkaException, TimeoutError) as exc:
            # What it applied is true (put-if-absent, deletions final); `posts` read from
            # the beginning completes it.
            log.warning("directory_snapshot_failed", error=str(exc), then="posts from the start")
            return {}
        self.store.flush(starts, {})  # a restart from here reads posts on from `starts`
        log.info(
            "directory_snapshot_loaded",
            records=self.snapshot_records,
            load_s=round(time.monotonic() - started, 3),
        )
        return starts

    def stop(self) -> None:
        self.reader.stop()
        # This process's own writes (reflected by no offset).
        self.store.flush({}, {}, caught_up=self._caught_up)
        self.store.close()

    async def loaded(self, timeout: float) -> None:
        """Wait until the directory is loaded; ReaderFailed if its reader died first."""
        await self.reader.wait_caught_up(timeout)

    # -- reader callbacks -------------------------------------------------------------
    def _decode(self, msg: Message) -> ev.Event | CommentRecord | None:
        """On the reader thread: the record's event or comment, None if it is not valid."""
        partition = msg.partition() or 0
        if msg.topic() == self.topic_post_comments:
            try:
                return post_comments.decode(msg.key(), msg.value(), msg.headers(), partition)
            except ValueError as exc:
                log.warning(
                    "undecodable_record",
                    topic=msg.topic(),
                    partition=partition,
                    offset=msg.offset(),
                    error=str(exc),
                )
                return None
        partitions = self.settings.posts_partitions
        try:
            return check(topics.POSTS, msg.key(), msg.value(), partition, partitions).event
        except InvalidEvent:
            return None  # the processor dead-letters it: it exists nowhere

    def _loaded(self) -> None:
        self._caught_up = True
        self.store.flush({}, self.state.comment_positions, caught_up=True)
        log.info(
            "directory_loaded",
            start=self._start_kind,
            snapshot_records=self.snapshot_records,
            replayed_records=self.reader.records,
            load_s=round(time.monotonic() - self._started, 3),
        )

    def _apply(self, batch: Batch[ev.Event | CommentRecord]) -> None:
        for item in batch.items:
            if isinstance(item, CommentRecord):
                self.state.apply_record(item)
            else:
                self.state.apply(item)
        moved = {}
        for key, offset in batch.positions.items():
            if offset > self.positions.get(key, 0):
                self.positions[key] = offset
                moved[key] = offset
        # The entries with the offsets (and comment positions) they reflect, together.
        self.store.flush(moved, self.state.comment_positions, caught_up=self._caught_up)
        self._progress.set()
        self._progress = asyncio.Event()

    # -- writes of this process ---------------------------------------------------------
    def record(self, event: ev.Event) -> None:
        """Apply an event this process wrote (after the broker acknowledged it)."""
        self.state.apply(event)

    # -- lookups --------------------------------------------------------------------------
    async def post(self, post_id: str, timeout: float) -> Entry | None:
        """The post, waiting for the reader to catch up before saying it does not exist;
        Unavailable if it could not catch up in time (Kafka away, reader behind)."""
        found = self.state.posts.get(post_id)
        if found is not None:
            return found
        reached = await self._catch_up(self.topic_posts, None, timeout)
        return self._found_or_unsure(self.state.posts.get(post_id), reached)

    async def comment(self, post_id: str, comment_id: str, timeout: float) -> Entry | None:
        found = self.state.comments.get(comment_id)
        if found is not None:
            return found
        partition = partition_for(post_id.encode(), self.settings.copartitions)
        # The raw partition's end now, reached once post_comments reflects it.
        reached = await self._catch_up(self.topic_comments, partition, timeout)
        return self._found_or_unsure(self.state.comments.get(comment_id), reached)

    @staticmethod
    def _found_or_unsure(found: Entry | None, reached: bool) -> Entry | None:
        """A miss counts as "does not exist" only once the directory reflects everything
        written before the lookup; otherwise (Kafka unreachable, the end offsets or the
        records did not come in time; for comments also an event that yields no
        post_comments record, see the module docstring) NOT_FOUND could be wrong, and
        the caller should retry."""
        if found is None and not reached:
            raise Unavailable(
                "could not check against Kafka in time whether it exists; retry",
                reason="EVENT_STORE_UNAVAILABLE",
                retry_after_s=1.0,
            )
        return found

    async def _catch_up(self, topic: str, partition: int | None, timeout: float) -> bool:
        """Wait until the directory reflects the partitions' ends as of now (_position);
        False if it did not within timeout (or the ends could not be fetched)."""
        deadline = self.loop.time() + timeout
        try:
            ends = await asyncio.wait_for(self._ends(topic), timeout)
        except (TimeoutError, KafkaException):
            return False
        wanted = {k: v for k, v in ends.items() if partition is None or k[1] == partition}
        while any(self._position(k) < end for k, end in wanted.items()):
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def _position(self, key: tuple[str, int]) -> int:
        """How far the directory reflects a partition: for the raw `comments`, through
        post_comments' src-offsets; otherwise the reader's own position."""
        if key[0] == self.topic_comments:
            return self.state.comment_positions.get(key[1], 0)
        return self.positions.get(key, 0)

    async def _ends(self, topic: str) -> dict[tuple[str, int], int]:
        """End offsets of every partition of topic, fetched no earlier than this call.

        Concurrent callers share one broker round trip: a caller joins the query that
        has not started yet (it will reflect everything acknowledged before the call).
        """
        query = self._queries.get(topic)
        if query is None or query.started:
            query = _Query(self.loop.create_future())
            self._queries[topic] = query
            self.loop.call_soon(self._launch, topic, query)
        return await asyncio.shield(query.future)

    def _partition_count(self, topic: str) -> int:
        if topic == self.topic_posts:
            return self.settings.posts_partitions
        return self.settings.copartitions

    def _launch(self, topic: str, query: _Query) -> None:
        query.started = True

        def fetch() -> dict[tuple[str, int], int]:
            return end_offsets(self.admin, topic, self._partition_count(topic))

        task = self.loop.run_in_executor(None, fetch)

        def done(t: asyncio.Future[dict[tuple[str, int], int]]) -> None:
            if self._queries.get(topic) is query:
                del self._queries[topic]
            error = t.exception()
            if error is not None:
                query.future.set_exception(error)
                # Marked retrieved: every waiter may have given up already (Kafka away),
                # and asyncio would log the exception with a traceback.
                query.future.exception()
            else:
                query.future.set_result(t.result())

        task.add_done_callback(done)
