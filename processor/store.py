"""Local state on disk: one RocksDB per processor instance, one key prefix per task.

RocksDB keeps state out of RAM (bounded block cache and memtables), so the processor
tracks far more likes than fit in memory. It is only a cache of the changelog
topics: writes of a transaction stay in an in-memory overlay and reach RocksDB only
after the transaction committed, together with the changelog offset they
correspond to (the checkpoint). After a crash the store is therefore never ahead of
Kafka; restore replays the changelog from the checkpoint (or from the beginning when
the local copy is missing or too old).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

_META = b"\xff"  # sorts after every data key type (C, E, P, Q)
_CHECKPOINT = _META + b"checkpoint"
_MISSING = object()


def _prefix(partition: int) -> bytes:
    return partition.to_bytes(2, "big")


class LocalStore:
    """The instance's RocksDB; hands out one TaskStore per partition."""

    def __init__(self, path: Path, cache_mb: int = 64, write_buffer_mb: int = 16) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(cache_mb * 1024 * 1024))
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_size(write_buffer_mb * 1024 * 1024)
        options.set_max_write_buffer_number(3)
        options.increase_parallelism(2)
        self.path = path
        self.db = Rdict(str(path), options)

    def task(self, partition: int) -> TaskStore:
        return TaskStore(self.db, partition)

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class TaskStore:
    """Store for one task: reads see uncommitted writes; commit() persists them."""

    def __init__(self, db: Rdict, partition: int) -> None:
        self.db = db
        self.partition = partition
        self.prefix = _prefix(partition)
        self.overlay: dict[bytes, bytes | None] = {}

    # Store protocol -------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        value = self.overlay.get(key, _MISSING)
        if value is _MISSING:
            raw = self.db.get(self.prefix + key)
            return raw if isinstance(raw, bytes) else None
        return value  # type: ignore[return-value]

    def put(self, key: bytes, value: bytes) -> None:
        self.overlay[key] = value

    def delete(self, key: bytes) -> None:
        self.overlay[key] = None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed records with this key prefix (the overlay is not included)."""
        start = self.prefix + prefix
        n = len(self.prefix)
        for key, value in self.db.items(from_key=start):
            assert isinstance(key, bytes) and isinstance(value, bytes)
            if not key.startswith(start):
                break
            yield key[n:], value

    # Transaction support ----------------------------------------------------------
    def commit(self, changelog_next_offset: int | None) -> None:
        """Persist the overlay (after the Kafka transaction committed)."""
        batch = WriteBatch(raw_mode=True)
        for key, value in self.overlay.items():
            if value is None:
                batch.delete(self.prefix + key)
            else:
                batch.put(self.prefix + key, value)
        if changelog_next_offset is not None:
            batch.put(self.prefix + _CHECKPOINT, _encode_checkpoint(changelog_next_offset))
        self.db.write(batch)
        self.overlay.clear()

    def discard(self) -> None:
        """Forget uncommitted writes (the transaction was aborted)."""
        self.overlay.clear()

    # Restore support --------------------------------------------------------------
    def checkpoint(self) -> tuple[int, float] | None:
        """(next changelog offset, wall time written) of the local copy, if any."""
        raw = self.db.get(self.prefix + _CHECKPOINT)
        if raw is None:
            return None
        offset, written = raw.decode().split(":")
        return int(offset), float(written)

    def wipe(self) -> None:
        """Delete this task's local copy (it will be rebuilt from the changelog)."""
        self.overlay.clear()
        self.db.delete_range(self.prefix, _prefix(self.partition + 1))

    def restore(self, records: list[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Apply changelog records directly (restore path) and move the checkpoint."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(self.prefix + key)
            else:
                batch.put(self.prefix + key, value)
        batch.put(self.prefix + _CHECKPOINT, _encode_checkpoint(next_offset))
        self.db.write(batch)


def _encode_checkpoint(offset: int) -> bytes:
    return f"{offset}:{time.time():.3f}".encode()
