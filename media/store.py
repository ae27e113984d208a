"""Where images live: the MediaStore protocol, its records, and the local file store.

Files appear atomically (temp file, fsync, rename) and the metadata file is written
last: a media id exists exactly when its metadata file does, whatever crashed when.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from media.pipeline import ProcessedImage, Rendition
from mysocial import ids
from mysocial.log import get_logger

log = get_logger("media")

# Temp files older than this at start-up were left by a killed process.
STALE_TEMP_S = 600.0
TEMP_DIR = ".tmp"
META_FILE = "meta.json"
META_VERSION = 1


@dataclass(frozen=True)
class RenditionRecord:
    """Where a rendition lives and what it is."""

    file: str
    content_type: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class MediaRecord:
    """The metadata file of one media id (its presence is what makes the id exist)."""

    media_id: str
    content_type: str
    uploaders: tuple[str, ...]
    created_at: str
    source_format: str
    source_bytes: int
    renditions: dict[Rendition, RenditionRecord]

    @property
    def width(self) -> int:
        return self.renditions[Rendition.ORIGINAL].width

    @property
    def height(self) -> int:
        return self.renditions[Rendition.ORIGINAL].height

    @classmethod
    def new(cls, image: ProcessedImage, uploader: str, now: datetime | None = None) -> MediaRecord:
        renditions = {
            r: RenditionRecord(e.file_name, image.content_type, e.width, e.height, len(e.data))
            for r, e in image.renditions.items()
        }
        created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        return cls(
            media_id=image.media_id,
            content_type=image.content_type,
            uploaders=(uploader,),
            created_at=created,
            source_format=image.source_format,
            source_bytes=image.source_bytes,
            renditions=renditions,
        )

    def to_json(self) -> bytes:
        doc = {
            "version": META_VERSION,
            "media_id": self.media_id,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "uploaders": list(self.uploaders),
            "created_at": self.created_at,
            "source": {"format": self.source_format, "size_bytes": self.source_bytes},
            "renditions": {
                str(r): {
                    "file": v.file,
                    "content_type": v.content_type,
                    "width": v.width,
                    "height": v.height,
                    "size_bytes": v.size_bytes,
                }
                for r, v in self.renditions.items()
            },
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> MediaRecord:
        doc = json.loads(raw)
        renditions = {
            Rendition(name): RenditionRecord(
                str(v["file"]),
                str(v["content_type"]),
                int(v["width"]),
                int(v["height"]),
                int(v["size_bytes"]),
            )
            for name, v in doc["renditions"].items()
        }
        return cls(
            media_id=str(doc["media_id"]),
            content_type=str(doc["content_type"]),
            uploaders=tuple(str(u) for u in doc["uploaders"]),
            created_at=str(doc["created_at"]),
            source_format=str(doc["source"]["format"]),
            source_bytes=int(doc["source"]["size_bytes"]),
            renditions=renditions,
        )


@dataclass
class OpenedRendition:
    """A rendition opened for reading; the caller closes `file`."""

    media_id: str
    rendition: Rendition
    record: RenditionRecord
    file: IO[bytes]
    size_bytes: int


class MediaStore(Protocol):
    """Where images live. Both services use one; any blob store can implement it."""

    def put(self, image: ProcessedImage, uploader: str) -> MediaRecord:
        """Store image (once per content) and record uploader as one of its uploaders."""
        ...

    def get(self, media_id: str, rendition: Rendition) -> OpenedRendition | None:
        """Open a rendition for reading, or None if the media id does not exist."""
        ...

    def exists(self, media_id: str) -> bool:
        """True once the media is completely stored."""
        ...

    def metadata(self, media_id: str) -> MediaRecord | None:
        """The media's record, or None if it does not exist."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalMediaStore:
    """Content-addressed files: ``<root>/ab/cd/<sha256>/{original,feed,thumbnail}.<ext>``
    plus ``meta.json``, written last. Temporary files live in ``<root>/.tmp`` (same file
    system, so the final rename is atomic) and are never read; stale ones are removed
    at start-up."""

    def __init__(self, root: Path | str, *, stale_temp_s: float = STALE_TEMP_S) -> None:
        self.root = Path(root)
        self.temp_dir = self.root / TEMP_DIR
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        removed = self.clean_temp(stale_temp_s)
        if removed:
            log.info("media_stale_temp_removed", files=removed, dir=str(self.temp_dir))

    def clean_temp(self, older_than_s: float) -> int:
        """Delete temp files older than older_than_s (left by killed processes)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(self.temp_dir):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # another process cleaned it first
        return removed

    def media_dir(self, media_id: str) -> Path:
        if not ids.is_media_id(media_id):  # the id becomes a path: never trust it
            raise ValueError(f"not a media id: {media_id[:80]!r}")
        return self.root / media_id[:2] / media_id[2:4] / media_id

    def _makedirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists() and p != self.root:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir()
            _fsync_dir(d.parent)  # the new entry survives a power cut

    def _atomic_write(self, path: Path, data: bytes) -> None:
        """Write data under path so readers see either nothing or all of it."""
        prefix = f"{path.parent.name[:12]}-{path.name}."  # says what it was, for operators
        fd, tmp = tempfile.mkstemp(dir=self.temp_dir, prefix=prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Exclusive lock on a media directory, across processes (workers share the store)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def put(self, image: ProcessedImage, uploader: str) -> MediaRecord:
        existing = self.metadata(image.media_id)
        if existing is not None and uploader in existing.uploaders:
            return existing  # the common duplicate: nothing to write
        path = self.media_dir(image.media_id)
        self._makedirs(path)
        with self._locked(path):
            existing = self.metadata(image.media_id)
            if existing is None:
                written: set[str] = set()
                for encoded in image.renditions.values():
                    if encoded.file_name not in written:
                        self._atomic_write(path / encoded.file_name, encoded.data)
                        written.add(encoded.file_name)
                record = MediaRecord.new(image, uploader)
            elif uploader in existing.uploaders:
                return existing
            else:
                record = replace(existing, uploaders=(*existing.uploaders, uploader))
            self._atomic_write(path / META_FILE, record.to_json())  # last: now it exists
        return record

    def metadata(self, media_id: str) -> MediaRecord | None:
        try:
            raw = (self.media_dir(media_id) / META_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return MediaRecord.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("media_metadata_unreadable", media_id=media_id, error=str(exc))
            return None

    def exists(self, media_id: str) -> bool:
        return (self.media_dir(media_id) / META_FILE).is_file()

    def get(self, media_id: str, rendition: Rendition) -> OpenedRendition | None:
        record = self.metadata(media_id)
        if record is None or rendition not in record.renditions:
            return None
        info = record.renditions[rendition]
        try:
            f = (self.media_dir(media_id) / info.file).open("rb")
        except FileNotFoundError:
            log.error("media_file_missing", media_id=media_id, rendition=str(rendition))
            return None
        return OpenedRendition(media_id, rendition, info, f, os.fstat(f.fileno()).st_size)
