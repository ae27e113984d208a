"""The read models on local disk: one RocksDB per query service replica.

RocksDB holds everything the read models know, so memory does not grow with the
number of posts (query_service.models keeps only a bounded cache of hot posts) and a
restart replays only the records that arrived since (docs/QUERY.md, "Local store").
Like the processor's store it is a cache of the topics, written without the WAL: the
tailer's next offsets go in the same WriteBatch as the changes they reflect, so after
a crash the store holds a prefix of the batches and the offsets that match it.

Key layout (raw bytes; strings are length-prefixed, so no prefix is another's):

    P <post_id>                     a post: LIVE header + serialized res.Post, or GONE
    F <feed key>                    the feed, newest first (value empty)
    A <author> <feed key>           each author's posts, newest first (value empty)
    C <post_id> <comment key>       a live comment, newest first: serialized res.Comment
    K <post_id> <comment_id>        the time part of that comment's C key
    \\xff o <topic> <partition>      next offset the tailer reads there
    \\xff c <partition>              comment position (see ReadModel.comment_positions)
    \\xff t, \\xff m, \\xff w          trending ranking, deployment marker, caught-up time

A feed key (-created_ms, id) is 8 big-endian bytes of -created_ms + 2**63 followed by
the id, so byte order is the tuple order and a page is one iterator seek.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocksdict import WriteBatch

from mysocial.rocks import NO_WAL, open_rocksdb
from mysocial.v1 import resources_pb2 as res

FeedKey = tuple[int, str]  # (-created_ms, id): ascending order is newest first
LAYOUT = 1  # version of this layout: a store written in another one is rebuilt

_BIAS = 2**63
_LIVE = struct.Struct(">cQQQQQqH")  # b"L", version, 3 applied-through, updates, created, len
_GONE = struct.Struct(">cQH")  # b"D", version of the tombstone, author length
_U64 = struct.Struct(">Q")
_META = b"\xff"
_OFFSET, _COMMENT_POS = _META + b"o", _META + b"c"
_TRENDING, _MARKER, _CAUGHT_UP = _META + b"t", _META + b"m", _META + b"w"


@dataclass(slots=True)
class PostView:
    """One post as the query side keeps it: serialized, parsed only when read.

    A parsed protobuf Post costs ~1.5 KiB of Python objects; its serialized form is
    ~250 bytes, and reads parse it in about a microsecond (M1 in the benchmarks).
    """

    data: bytes  # serialized res.Post
    author_id: str  # interned: shared by every post of the author
    feed_key: FeedKey  # one tuple shared by the feed and the author index
    posts_at: int  # offsets just past the newest applied event, per source
    likes_at: int
    comments_at: int
    # 1 + offset of the posts_with_counts record this state comes from: the version
    # streams carry, the same on every instance and only growing for a post.
    version: int = 0
    updates: int = 0  # records applied since the post was created (skipped_updates)

    @property
    def post(self) -> res.Post:
        return res.Post.FromString(self.data)


@dataclass(slots=True)
class Gone:
    """A deleted post: deletion is final, so the marker is kept for good."""

    author_id: str
    version: int  # 1 + offset of the tombstone (0: not known)


def encode_view(view: PostView | Gone) -> bytes:
    author = view.author_id.encode()
    if isinstance(view, Gone):
        return _GONE.pack(b"D", view.version, len(author)) + author
    head = _LIVE.pack(
        b"L",
        view.version,
        view.posts_at,
        view.likes_at,
        view.comments_at,
        view.updates,
        -view.feed_key[0],
        len(author),
    )
    return head + author + view.data


def decode_view(post_id: str, raw: bytes) -> PostView | Gone:
    if raw[:1] == b"D":
        _, version, n = _GONE.unpack_from(raw)
        return Gone(sys.intern(raw[_GONE.size : _GONE.size + n].decode()), version)
    _, version, posts_at, likes_at, comments_at, updates, created, n = _LIVE.unpack_from(raw)
    start = _LIVE.size + n
    author = sys.intern(raw[_LIVE.size : start].decode())
    return PostView(
        raw[start:], author, (-created, post_id), posts_at, likes_at, comments_at, version, updates
    )


def _seg(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_key(key: FeedKey) -> bytes:
    return _U64.pack(key[0] + _BIAS) + key[1].encode()


def decode_key(raw: bytes) -> FeedKey:
    return _U64.unpack_from(raw)[0] - _BIAS, raw[8:].decode()


def _successor(prefix: bytes) -> bytes:
    """The smallest key after every key starting with prefix."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


class QueryStore:
    """The replica's RocksDB: typed reads, and writes collected in one open batch.

    Writes go to `batch` until commit(); the read model reads its own uncommitted
    posts from its cache, and comments through `pending` (the K keys of the batch).
    Call everything from one thread (the event loop).
    """

    def __init__(self, path: Path, *, cache_mb: int = 16, write_buffer_mb: int = 4) -> None:
        self.path = path
        self._cache_mb, self._write_buffer_mb = cache_mb, write_buffer_mb
        self.db = self._open()
        self.batch = WriteBatch(raw_mode=True)
        self.pending: dict[bytes, FeedKey | None] = {}

    def _open(self) -> Any:
        return open_rocksdb(
            self.path,
            cache_mb=self._cache_mb,
            write_buffer_mb=self._write_buffer_mb,
            write_buffers=2,
            universal=True,
            locked_hint=(
                "another query service replica uses this state folder (give each replica "
                "its own MYSOCIAL_QUERY_REPLICA_ID or MYSOCIAL_QUERY_STATE_DIR)"
            ),
        )

    # -- posts and feeds -----------------------------------------------------------------
    def post(self, post_id: str) -> bytes | None:
        raw = self.db.get(b"P" + post_id.encode())
        return raw if isinstance(raw, bytes) else None

    def posts(self, post_ids: list[str]) -> list[bytes | None]:
        """Several posts in one multi-get (a listing's page)."""
        found = self.db.get([b"P" + post_id.encode() for post_id in post_ids])
        return [raw if isinstance(raw, bytes) else None for raw in found]

    def put_post(self, post_id: str, view: PostView | Gone) -> None:
        self.batch.put(b"P" + post_id.encode(), encode_view(view))

    def index(self, author_id: str, key: FeedKey, add: bool = True) -> None:
        """Add a post to (or remove it from) the feed and its author's feed."""
        encoded = encode_key(key)
        for full in (b"F" + encoded, b"A" + _seg(author_id) + encoded):
            if add:
                self.batch.put(full, b"")
            else:
                self.batch.delete(full)

    def feed(self, author_id: str, after: FeedKey | None, count: int) -> list[FeedKey]:
        """Up to count keys of the feed (or author's feed) strictly after the cursor."""
        prefix = b"A" + _seg(author_id) if author_id else b"F"
        n = len(prefix)
        return [decode_key(k[n:]) for k, _ in self._scan(prefix, after, count, False)]

    def has_author(self, author_id: str) -> bool:
        return bool(self._scan(b"A" + _seg(author_id), None, 1, False))

    def _scan(
        self, prefix: bytes, after: FeedKey | None, count: int, values: bool
    ) -> list[tuple[bytes, bytes]]:
        it = self.db.iter()
        start = prefix + encode_key(after) if after is not None else prefix
        it.seek(start)
        if after is not None and it.valid() and it.key() == start:
            it.next()
        out: list[tuple[bytes, bytes]] = []
        while len(out) < count and it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            out.append((key, it.value() if values else b""))
            it.next()
        return out

    # -- comments ---------------------------------------------------------------------
    def comment_key(self, post_id: str, comment_id: str) -> FeedKey | None:
        """The order key of a listed comment (None: not listed)."""
        key = b"K" + _seg(post_id) + comment_id.encode()
        if key in self.pending:
            return self.pending[key]
        raw = self.db.get(key)
        return (_U64.unpack(raw)[0] - _BIAS, comment_id) if isinstance(raw, bytes) else None

    def put_comment(self, post_id: str, key: FeedKey, data: bytes | None) -> None:
        """Insert or replace (data) or delete (None) the comment with this key."""
        encoded = encode_key(key)
        id_key = b"K" + _seg(post_id) + key[1].encode()
        if data is None:
            self.batch.delete(b"C" + _seg(post_id) + encoded)
            self.batch.delete(id_key)
            self.pending[id_key] = None
        else:
            self.batch.put(b"C" + _seg(post_id) + encoded, data)
            self.batch.put(id_key, encoded[:8])
            self.pending[id_key] = key

    def drop_comments(self, post_id: str) -> None:
        """Forget every comment of a post (it was deleted)."""
        for kind in (b"C", b"K"):
            prefix = kind + _seg(post_id)
            self.batch.delete_range(prefix, _successor(prefix))
        gone = b"K" + _seg(post_id)
        for key in self.pending:
            if key.startswith(gone):
                self.pending[key] = None

    def comments(
        self, post_id: str, after: FeedKey | None, count: int
    ) -> list[tuple[FeedKey, bytes]]:
        prefix = b"C" + _seg(post_id)
        n = len(prefix)
        return [(decode_key(k[n:]), v) for k, v in self._scan(prefix, after, count, True)]

    def has_comments(self, post_id: str) -> bool:
        return bool(self._scan(b"C" + _seg(post_id), None, 1, False))

    # -- positions, trending, marker ------------------------------------------------------
    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as last committed."""
        out = {}
        for key, value in self._prefixed(_OFFSET):
            size = int.from_bytes(key[2:4], "big")
            topic = key[4 : 4 + size].decode()
            out[(topic, int.from_bytes(key[4 + size :], "big"))] = _U64.unpack(value)[0]
        return out

    def put_offset(self, topic: str, partition: int, offset: int) -> None:
        self.batch.put(_OFFSET + _seg(topic) + partition.to_bytes(4, "big"), _U64.pack(offset))

    def comment_positions(self) -> dict[int, int]:
        return {
            int.from_bytes(key[2:], "big"): _U64.unpack(value)[0]
            for key, value in self._prefixed(_COMMENT_POS)
        }

    def put_comment_position(self, partition: int, position: int) -> None:
        self.batch.put(_COMMENT_POS + partition.to_bytes(4, "big"), _U64.pack(position))

    def trending(self) -> bytes | None:
        raw = self.db.get(_TRENDING)
        return raw if isinstance(raw, bytes) else None

    def put_trending(self, data: bytes) -> None:
        self.batch.put(_TRENDING, data)

    def marker(self) -> dict[str, Any] | None:
        """The deployment this store was built from (see mysocial.kafka.warm_start)."""
        raw = self.db.get(_MARKER)
        return json.loads(raw) if isinstance(raw, bytes) else None

    def put_marker(self, marker: dict[str, Any]) -> None:
        self.batch.put(_MARKER, json.dumps(marker, sort_keys=True).encode())

    def caught_up_at(self) -> float | None:
        """The last wall time the store was known caught up with the topics (None: it
        never was: an interrupted rebuild). Every record past its offsets is younger."""
        raw = self.db.get(_CAUGHT_UP)
        return float(raw.decode()) if isinstance(raw, bytes) else None

    def _prefixed(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out = []
        for key, value in self.db.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            out.append((key, value))
        return out

    # -- lifecycle ----------------------------------------------------------------------
    def commit(self, caught_up: bool = False) -> None:
        """Write the open batch (one atomic write, no WAL) and start a new one;
        caught_up: the offsets written reach the topics' ends as of now."""
        if caught_up:
            self.batch.put(_CAUGHT_UP, f"{time.time():.3f}".encode())
        if self.batch.len():
            self.db.write(self.batch, NO_WAL)
            self.batch = WriteBatch(raw_mode=True)
        self.pending.clear()

    def wipe(self) -> None:
        """Delete everything (the caller rebuilds from the topics)."""
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.db = self._open()
        self.batch = WriteBatch(raw_mode=True)
        self.pending.clear()

    def close(self) -> None:
        """Flush the memtables (a clean stop replays nothing next time) and close."""
        self.db.flush()
        self.db.close()
