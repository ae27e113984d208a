"""The directory's entries on local disk, with a bounded cache of the hot ones.

Every worker of the command service used to hold every post and comment in a dict
(about 150 bytes each, per worker). Each worker now keeps them in a RocksDB of its own
(the first free folder under MYSOCIAL_COMMAND_STATE_DIR; one writer per database) with
a bounded LRU of entries in front, so its memory
no longer grows with the history, and it stores with them the Kafka offsets they
reflect, in the same write batch: a restart reads on from there instead of from the
beginning (command_service.directory decides whether it may).

Measured choice (docs/CAPACITY.md): one store per worker rather than one per host
shared by the workers, because RocksDB admits one writer per database and a shared
one would need a process of its own to feed it; the price is disk (each worker's copy,
tens of bytes per entry compressed), not memory.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rocksdict import Rdict, WriteBatch

from mysocial.rocks import NO_WAL, open_rocksdb

Key = tuple[str, int]

_POST, _COMMENT = b"p", b"c"
_META = b"\xff"
# One letter each after _META: no meta key is a prefix of another's (scans rely on it).
_OFFSET = _META + b"o"  # + topic + b"\0" + partition: next offset to read
_COMMENT_POSITION = _META + b"p"  # + `comments` partition: 1 + newest src-offset
_MARKER = _META + b"m"  # the deployment the store was built from (JSON)
_CAUGHT_UP_AT = _META + b"u"  # wall time the offsets last reached the ends


@dataclass(slots=True)
class Entry:
    """A post or a comment: its author and whether it is deleted."""

    author: str
    deleted: bool = False


def encode(entry: Entry) -> bytes:
    return entry.author.encode() + (b"\0\1" if entry.deleted else b"\0\0")


def decode(raw: bytes) -> Entry:
    return Entry(raw[:-2].decode(), raw[-1:] == b"\1")


class Table(Protocol):
    """Where DirectoryState keeps posts or comments: a dict, or a DiskTable."""

    def get(self, key: str) -> Entry | None: ...

    def put(self, key: str, entry: Entry) -> None: ...

    def __getitem__(self, key: str) -> Entry: ...


class MemoryTable(dict[str, Entry]):
    """A Table in a dict (unit tests, and the state of a directory without a folder)."""

    def put(self, key: str, entry: Entry) -> None:
        self[key] = entry


class DiskStore:
    """One worker's RocksDB: entries, offsets and comment positions, written together."""

    def __init__(self, path: Path, cache_entries: int, cache_mb: int = 16) -> None:
        self.path = path
        self.db: Rdict = open_rocksdb(
            path,
            cache_mb=cache_mb,
            write_buffer_mb=8,
            write_buffers=2,
            locked_hint="held by another command-service worker",
        )
        self.cache: OrderedDict[bytes, Entry] = OrderedDict()
        self.cache_entries = cache_entries
        self.pending: dict[bytes, bytes] = {}
        self.closed = False
        self.posts = DiskTable(self, _POST)
        self.comments = DiskTable(self, _COMMENT)

    # -- entries ------------------------------------------------------------------------
    def get(self, key: bytes) -> Entry | None:
        entry = self.cache.get(key)
        if entry is not None:
            self.cache.move_to_end(key)
            return entry
        raw = self.pending.get(key)
        if raw is None:
            raw = self.db.get(key)
        if raw is None:
            return None
        entry = decode(raw)
        self._remember(key, entry)
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        self.pending[key] = encode(entry)
        self._remember(key, entry)

    def _remember(self, key: bytes, entry: Entry) -> None:
        self.cache[key] = entry
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_entries:
            self.cache.popitem(last=False)

    # -- what the store reflects ----------------------------------------------------------
    def flush(
        self,
        offsets: Mapping[Key, int],
        comment_positions: Mapping[int, int],
        caught_up: bool = False,
    ) -> None:
        """Write the pending entries with the offsets and positions they reflect;
        caught_up: the offsets are (or were, moments ago) the topics' ends."""
        if self.closed:
            return  # a batch handed over while stopping: it is read again next time
        batch = WriteBatch(raw_mode=True)
        for key, raw in self.pending.items():
            batch.put(key, raw)
        for (topic, partition), offset in offsets.items():
            batch.put(_offset_key(topic, partition), offset.to_bytes(8, "big"))
        for partition, position in comment_positions.items():
            batch.put(_COMMENT_POSITION + str(partition).encode(), position.to_bytes(8, "big"))
        if caught_up:
            batch.put(_CAUGHT_UP_AT, str(time.time()).encode())
        self.db.write(batch, NO_WAL)
        self.pending.clear()

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, int]]:
        """(key without prefix, 8-byte big-endian number) under a meta prefix."""
        for key, raw in self.db.items(from_key=prefix):
            assert isinstance(key, bytes) and isinstance(raw, bytes)
            if not key.startswith(prefix):
                break
            yield key[len(prefix) :], int.from_bytes(raw, "big")

    def offsets(self) -> dict[Key, int]:
        out = {}
        for key, offset in self._scan(_OFFSET):
            topic, _, partition = key.partition(b"\0")
            out[(topic.decode(), int(partition))] = offset
        return out

    def comment_positions(self) -> dict[int, int]:
        return {int(key): position for key, position in self._scan(_COMMENT_POSITION)}

    def marker(self) -> dict[str, Any] | None:
        raw = self.db.get(_MARKER)
        return None if raw is None else dict(json.loads(raw))

    def caught_up_at(self) -> float | None:
        """When the store last reflected the topics up to their ends (None: never, as
        after a rebuild that was interrupted: it must start over)."""
        raw = self.db.get(_CAUGHT_UP_AT)
        return None if raw is None else float(raw)

    def reset(self, marker: Mapping[str, Any]) -> None:
        """Forget everything (a cold start) and note the deployment it is built from."""
        self.cache.clear()
        self.pending.clear()
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(b"\x00", _META + b"\xff" * 8)
        batch.put(_MARKER, json.dumps(dict(marker), sort_keys=True).encode())
        self.db.write(batch, NO_WAL)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.db.close()


class DiskTable:
    """Posts or comments of a DiskStore, as DirectoryState sees them."""

    def __init__(self, store: DiskStore, prefix: bytes) -> None:
        self.store = store
        self.prefix = prefix

    def get(self, key: str) -> Entry | None:
        return self.store.get(self.prefix + key.encode())

    def put(self, key: str, entry: Entry) -> None:
        self.store.put(self.prefix + key.encode(), entry)

    def __getitem__(self, key: str) -> Entry:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found


def _offset_key(topic: str, partition: int) -> bytes:
    return _OFFSET + topic.encode() + b"\0" + str(partition).encode()
