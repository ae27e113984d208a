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

from rocksdict import Rdict, WriteBatch

from mysocial.rocks import NO_WAL as _NO_WAL
from mysocial.rocks import StateLocked as StateLocked
from mysocial.rocks import open_rocksdb

_META = b"\xff"  # sorts after every data key type (C, E, P, Q)
_CHECKPOINT = _META + b"checkpoint"


def _prefix(partition: int) -> bytes:
    return partition.to_bytes(2, "big")


class LocalStore:
    """The instance's RocksDB; hands out one TaskStore per partition."""

    def __init__(self, path: Path, cache_mb: int = 64, write_buffer_mb: int = 16) -> None:
        self.path = path
        self.db = open_rocksdb(
            path,
            cache_mb=cache_mb,
            write_buffer_mb=write_buffer_mb,
            locked_hint=(
                "an instance with the same MYSOCIAL_PROCESSOR_INSTANCE_ID runs on this host"
            ),
        )

    def task(self, partition: int) -> TaskStore:
        return TaskStore(self.db, partition)

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class TaskStore:
    """The committed state of one task. Uncommitted writes live in the Core (processor/
    core.py); the counts projection hands them over in a batch once their transaction
    committed."""

    def __init__(self, db: Rdict, partition: int) -> None:
        self.db = db
        self.partition = partition
        self.prefix = _prefix(partition)

    def get(self, key: bytes) -> bytes | None:
        raw = self.db.get(self.prefix + key)
        return raw if isinstance(raw, bytes) else None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed records with this key prefix."""
        start = self.prefix + prefix
        n = len(self.prefix)
        for key, value in self.db.items(from_key=start):
            assert isinstance(key, bytes) and isinstance(value, bytes)
            if not key.startswith(start):
                break
            yield key[n:], value

    def keys(self, *prefixes: bytes) -> Iterator[bytes]:
        """Committed keys under each of these key prefixes."""
        n = len(self.prefix)
        for prefix in prefixes:
            start = self.prefix + prefix
            for key in self.db.keys(from_key=start):
                assert isinstance(key, bytes)
                if not key.startswith(start):
                    break
                yield key[n:]

    def batch(self) -> WriteBatch:
        """An empty batch for this task's committed writes (keys get `prefix` first)."""
        return WriteBatch(raw_mode=True)

    def write(self, batch: WriteBatch, changelog_next_offset: int | None) -> None:
        """Persist a transaction's writes (after the Kafka transaction committed).

        Without the write-ahead log: the changelog topic is the durable copy, and the
        checkpoint goes in the same batch, so after a crash RocksDB holds a prefix of
        the batches with the checkpoint that matches it (restore replays the rest)."""
        if changelog_next_offset is not None:
            batch.put(self.prefix + _CHECKPOINT, _encode_checkpoint(changelog_next_offset))
        self.db.write(batch, _NO_WAL)

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
        self.db.write(batch, _NO_WAL)


def _encode_checkpoint(offset: int) -> bytes:
    return f"{offset}:{time.time():.3f}".encode()
