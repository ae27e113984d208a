"""Images: validate by content, strip private metadata, derive renditions, store by content.

One plain module shared by both services: the command service receives and processes
uploads (UploadImage) and checks the media ids of CreatePost; the query service streams
stored renditions (GetImage). Nothing here touches gRPC beyond the request messages;
errors are mysocial.errors, which the RPC wrappers map to statuses.

Why it is built this way:

- The client's word (file name, declared size, extension) decides nothing: the bytes
  are decoded by Pillow, and only JPEG, PNG and WebP pass. Dimensions are checked
  from the header before any pixel is decoded, so a tiny file declaring a gigantic
  canvas (a decompression bomb) costs nothing.
- What is stored and served is re-encoded from the pixels alone, after applying the
  EXIF orientation: GPS position, camera serials, EXIF/XMP/ICC blobs and comments can
  not survive, and viewers that ignore EXIF orientation still show the picture upright.
- The media id is the SHA-256 of the stored original, so the same picture uploaded
  twice is stored once, and an id can never name two different contents.
- Files appear atomically (temp file, fsync, rename) and the metadata file is written
  last: a media id exists exactly when its metadata file does, whatever crashed when.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from mysocial import ids
from mysocial.config import Settings
from mysocial.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from mysocial.log import get_logger
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import resources_pb2 as res

log = get_logger("media")

MiB = 1024 * 1024
# GetImage message size: small enough to interleave with other streams on a connection.
DOWNLOAD_CHUNK_BYTES = 64 * 1024
# Disk reads per thread hop when streaming a file out.
READ_BLOCK_BYTES = MiB
# The API promises "up to 1 MiB" per upload chunk.
MAX_UPLOAD_CHUNK_BYTES = MiB
# Uploads up to this size stay in memory; larger ones spill to an anonymous file.
SPOOL_IN_MEMORY_BYTES = MiB
# Temp files older than this at start-up were left by a killed process.
STALE_TEMP_S = 600.0
TEMP_DIR = ".tmp"
META_FILE = "meta.json"
META_VERSION = 1


class Rendition(StrEnum):
    """A stored version of an image."""

    ORIGINAL = "original"
    FEED = "feed"
    THUMBNAIL = "thumbnail"


# Bounding boxes of the derived renditions (aspect ratio kept, never enlarged).
RENDITION_BOXES: dict[Rendition, tuple[int, int]] = {
    Rendition.FEED: (1080, 1080),
    Rendition.THUMBNAIL: (256, 256),
}

# Accepted formats (Pillow's names) and what they are stored and served as.
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# Phones write multi-picture JPEGs (MPO): the first picture is an ordinary JPEG.
FORMAT_ALIASES = {"MPO": "JPEG"}
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 90, "optimize": True},
    "PNG": {"compress_level": 6},
    "WEBP": {"quality": 90, "method": 4},
}
ACCEPTED = "JPEG, PNG or WebP"

# Magic numbers of the accepted formats (a broken file that starts like one is corrupt,
# not "not an image") and of common formats we refuse, to name them precisely without
# running their Pillow parsers on untrusted bytes.
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (8, b"WEBP", "WEBP"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"%PDF", "PDF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
]

_RENDITION_FROM_PROTO: dict[int, Rendition] = {
    q.IMAGE_RENDITION_UNSPECIFIED: Rendition.ORIGINAL,
    q.IMAGE_RENDITION_ORIGINAL: Rendition.ORIGINAL,
    q.IMAGE_RENDITION_FEED: Rendition.FEED,
    q.IMAGE_RENDITION_THUMBNAIL: Rendition.THUMBNAIL,
}
RENDITION_TO_PROTO: dict[Rendition, q.ImageRendition.ValueType] = {
    Rendition.ORIGINAL: q.IMAGE_RENDITION_ORIGINAL,
    Rendition.FEED: q.IMAGE_RENDITION_FEED,
    Rendition.THUMBNAIL: q.IMAGE_RENDITION_THUMBNAIL,
}

_SRGB = ImageCms.createProfile("sRGB")


# -- processing (pure: bytes in, bytes out) ---------------------------------------------


@dataclass(frozen=True)
class EncodedImage:
    """One rendition's bytes; `file_name` is shared when it equals the original."""

    rendition: Rendition
    file_name: str
    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class ProcessedImage:
    """A validated, sanitized image and its renditions, ready to store."""

    media_id: str
    source_format: str
    content_type: str
    source_bytes: int
    renditions: dict[Rendition, EncodedImage]

    @property
    def original(self) -> EncodedImage:
        return self.renditions[Rendition.ORIGINAL]


def _rejected(message: str, reason: str, field: str = "chunk") -> InvalidArgument:
    return InvalidArgument(message, field=field, reason=reason)


def _sniff_format(head: bytes) -> str | None:
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    stripped = head.lstrip()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _too_many_pixels(width: int, height: int, max_pixels: int) -> InvalidArgument:
    return _rejected(
        f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        "TOO_MANY_PIXELS",
    )


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow guard, as a second line behind process_image's own check:
    Pillow refuses images over twice MAX_IMAGE_PIXELS and warns above it; the filter
    turns that warning into an error too. Called once when a service starts (warning
    filters are process state, not safe to toggle per call from threads)."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _open(source: IO[bytes], max_pixels: int) -> Image.Image:
    """Open (header only) an accepted format, or raise the precise InvalidArgument."""
    head = source.read(64)
    source.seek(0)
    try:
        return Image.open(source, formats=list(CONTENT_TYPES))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _rejected(
            f"the image declares more pixels than the limit of {max_pixels} (decompression bomb?)",
            "TOO_MANY_PIXELS",
        ) from None
    except UnidentifiedImageError:
        other = _sniff_format(head)
        if other in CONTENT_TYPES:
            raise _rejected(
                f"the image is corrupt: not a valid {other} file", "CORRUPT_IMAGE"
            ) from None
        if other is not None:
            raise _rejected(
                f"unsupported image format {other}; upload {ACCEPTED}", "UNSUPPORTED_FORMAT"
            ) from None
        raise _rejected(
            f"the upload is not an image ({ACCEPTED} expected)", "NOT_AN_IMAGE"
        ) from None
    except Exception as exc:  # any parser failure on the header: corrupt input
        raise _rejected(f"the image is corrupt: {exc}", "CORRUPT_IMAGE") from None


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert pixels described by an embedded ICC profile to sRGB, so dropping the
    profile (it can carry device and author strings) does not shift the colours."""
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, profile, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im  # an unusable profile is simply dropped
    return converted if converted is not None else im


def _pixels_only(im: Image.Image) -> Image.Image:
    """The pixels in a plain mode (L, LA, RGB or RGBA) with no metadata at all."""
    transparent = im.has_transparency_data
    im = _to_srgb(im, im.info.get("icc_profile"))
    mode = im.mode
    if mode in ("LA", "RGBA") or (mode in ("L", "RGB") and not transparent):
        out = im
    elif mode in ("L", "RGB"):  # a tRNS colour key becomes a real alpha channel
        out = im.convert(f"{mode}A")
    elif mode == "1":
        out = im.convert("L")
    elif mode.startswith("I"):  # 16-bit greyscale: scale, do not clip
        out = im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    else:  # P, PA, CMYK without a profile, YCbCr, LAB, HSV, F
        out = im.convert("RGBA" if transparent else "RGB")
    out.info = {}  # EXIF, XMP, ICC, comments, text chunks, dpi: none of it is written
    return out


def _encode(im: Image.Image, fmt: str) -> bytes:
    if fmt == "JPEG" and im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **SAVE_OPTIONS[fmt])
    return buf.getvalue()


def process_image(source: IO[bytes] | bytes, max_pixels: int) -> ProcessedImage:
    """Validate an upload by its content and produce its sanitized renditions.

    CPU-heavy (decode, resize, encode): callers on an event loop run it in a thread.
    Raises InvalidArgument (field "chunk", with a reason) for anything not accepted.
    """
    f: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    if size == 0:
        raise _rejected("the upload is empty: no image bytes were sent", "EMPTY_UPLOAD")
    with _open(f, max_pixels) as img:
        source_format = img.format or ""
        fmt = FORMAT_ALIASES.get(source_format, source_format)
        if fmt not in CONTENT_TYPES:
            raise _rejected(
                f"unsupported image format {source_format}; upload {ACCEPTED}",
                "UNSUPPORTED_FORMAT",
            )
        width, height = img.size
        if width < 1 or height < 1:
            raise _rejected(f"the image has no pixels ({width}x{height})", "CORRUPT_IMAGE")
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels)
        if fmt != "JPEG" and getattr(img, "n_frames", 1) > 1:
            raise _rejected(
                "animated images are not supported; upload a still image", "ANIMATED_IMAGE"
            )
        try:
            img.load()
            # Upright pixels first: once EXIF is gone, nothing could rotate them later.
            ImageOps.exif_transpose(img, in_place=True)
            clean = _pixels_only(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _rejected(str(exc), "TOO_MANY_PIXELS") from None
        except MemoryError:
            raise
        except Exception as exc:  # decoder errors: truncated or corrupt data
            truncated = "truncated" in str(exc).lower()
            raise _rejected(
                f"the image is {'truncated' if truncated else 'corrupt'}: {exc}",
                "TRUNCATED_IMAGE" if truncated else "CORRUPT_IMAGE",
            ) from None
        renditions = _renditions(clean, fmt)  # inside: clean may share img's pixels
    return ProcessedImage(
        media_id=hashlib.sha256(renditions[Rendition.ORIGINAL].data).hexdigest(),
        source_format=source_format,
        content_type=CONTENT_TYPES[fmt],
        source_bytes=size,
        renditions=renditions,
    )


def _renditions(clean: Image.Image, fmt: str) -> dict[Rendition, EncodedImage]:
    """The original re-encoded, plus each smaller box (sharing the original's file when
    it already fits, so a small image is not stored three times)."""
    ext = EXTENSIONS[fmt]
    original = EncodedImage(
        Rendition.ORIGINAL, f"original.{ext}", _encode(clean, fmt), clean.width, clean.height
    )
    renditions = {Rendition.ORIGINAL: original}
    for rendition, box in RENDITION_BOXES.items():
        if clean.width <= box[0] and clean.height <= box[1]:
            renditions[rendition] = replace(original, rendition=rendition)
            continue
        small = clean.copy()
        small.thumbnail(box, Image.Resampling.LANCZOS)
        renditions[rendition] = EncodedImage(
            rendition, f"{rendition}.{ext}", _encode(small, fmt), small.width, small.height
        )
    return renditions


# -- receiving an upload stream ----------------------------------------------------------


@dataclass
class ReceivedUpload:
    """The bytes of an upload, spooled (in memory, then an anonymous temp file)."""

    file: IO[bytes]
    size: int
    file_name: str


async def receive_upload(
    parts: AsyncIterable[cmd.UploadImageRequest], max_bytes: int, spool_dir: Path | None = None
) -> ReceivedUpload:
    """Read an UploadImage stream: metadata first, then chunks, within max_bytes.

    Fails as soon as the declared or running size passes the cap (RESOURCE_EXHAUSTED),
    so an oversized upload is cut off instead of being read to the end. The spool has
    no name on disk, so a killed process leaves no partial file behind.
    """
    it = aiter(parts)
    try:
        first = await anext(it)
    except StopAsyncIteration:
        raise InvalidArgument(
            "metadata is missing: the stream was empty", field="metadata", reason="NO_METADATA"
        ) from None
    if first.WhichOneof("part") != "metadata":
        raise InvalidArgument(
            "the first message must be metadata (file_name, size_bytes), not image bytes",
            field="metadata",
            reason="NO_METADATA",
        )
    declared = first.metadata.size_bytes
    if declared > max_bytes:
        raise ResourceExhausted(
            f"size_bytes is {declared}; the largest image accepted is {max_bytes} bytes",
            reason="IMAGE_TOO_LARGE",
        )
    # Ownership passes to the caller on success, so no `with` here.
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=SPOOL_IN_MEMORY_BYTES, dir=None if spool_dir is None else str(spool_dir)
    )
    total = 0
    try:
        async for part in it:
            if part.WhichOneof("part") != "chunk":
                raise InvalidArgument(
                    "only the first message may carry metadata; later ones carry chunks",
                    field="metadata",
                    reason="METADATA_REPEATED",
                )
            size = len(part.chunk)
            if size > MAX_UPLOAD_CHUNK_BYTES:
                raise InvalidArgument(
                    f"a chunk is {size} bytes; send at most {MAX_UPLOAD_CHUNK_BYTES} per message",
                    field="chunk",
                    reason="CHUNK_TOO_LARGE",
                )
            total += size
            if total > max_bytes:
                raise ResourceExhausted(
                    f"the upload passed {max_bytes} bytes, the largest image accepted",
                    reason="IMAGE_TOO_LARGE",
                )
            if declared and total > declared:
                raise InvalidArgument(
                    f"more bytes were sent than size_bytes declared ({declared})",
                    field="metadata.size_bytes",
                    reason="SIZE_MISMATCH",
                )
            spool.write(part.chunk)
        if total == 0:
            raise InvalidArgument(
                "the upload is empty: no image bytes were sent",
                field="chunk",
                reason="EMPTY_UPLOAD",
            )
        if declared and total != declared:
            raise InvalidArgument(
                f"received {total} bytes but size_bytes declared {declared}: incomplete upload",
                field="metadata.size_bytes",
                reason="SIZE_MISMATCH",
            )
        spool.seek(0)
        return ReceivedUpload(spool, total, first.metadata.file_name)
    except BaseException:
        spool.close()
        raise


# -- stored records --------------------------------------------------------------------------


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

    def to_proto(self) -> res.Media:
        """The description events and posts carry (the original's dimensions)."""
        return res.Media(
            media_id=self.media_id,
            content_type=self.content_type,
            width=self.width,
            height=self.height,
        )

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


# -- storage ------------------------------------------------------------------------------------


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


# -- what the services call ---------------------------------------------------------------------


def require_media_id(value: str, field: str = "media_id") -> str:
    """value if it is a well-formed media id, else InvalidArgument naming field."""
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not ids.is_media_id(value):
        raise InvalidArgument(f"{field} must be 64 lowercase hex digits", field=field)
    return value


def rendition_from_proto(value: int) -> Rendition:
    """The requested rendition (unspecified = original), or InvalidArgument."""
    try:
        return _RENDITION_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgument(f"unknown rendition {value}", field="rendition") from None


class MediaLibrary:
    """Uploads, post attachments and downloads over a MediaStore, for the servicers.

    Pillow and file I/O run in threads so the event loop keeps serving; at most
    `processing_slots` images are decoded at once, which bounds memory (a 40 MP image
    is ~160 MB of pixels) whatever the number of concurrent uploads.
    """

    def __init__(
        self,
        store: MediaStore,
        *,
        max_bytes: int,
        max_pixels: int,
        spool_dir: Path | None = None,
        processing_slots: int | None = None,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.spool_dir = spool_dir
        self._slots = asyncio.Semaphore(processing_slots or min(4, os.cpu_count() or 1))
        configure_pillow(max_pixels)

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLibrary:
        """The deployment's library: a LocalMediaStore at MYSOCIAL_MEDIA_DIR."""
        store = LocalMediaStore(settings.media_dir)
        return cls(
            store,
            max_bytes=settings.media_max_bytes,
            max_pixels=settings.media_max_pixels,
            spool_dir=store.temp_dir,
        )

    def _process_and_store(self, upload: ReceivedUpload, uploader: str) -> MediaRecord:
        with upload.file:
            image = process_image(upload.file, self.max_pixels)
        return self.store.put(image, uploader)

    async def upload(
        self, parts: AsyncIterable[cmd.UploadImageRequest], uploader: str
    ) -> MediaRecord:
        """Receive, validate, sanitize and store an upload; returns its record."""
        started = time.monotonic()
        upload = await receive_upload(parts, self.max_bytes, self.spool_dir)
        handed_over = False
        try:
            async with self._slots:
                handed_over = True  # the thread closes the spool, even if we are cancelled
                record = await asyncio.to_thread(self._process_and_store, upload, uploader)
        finally:
            if not handed_over:
                upload.file.close()
        log.info(
            "image_stored",
            media_id=record.media_id,
            content_type=record.content_type,
            width=record.width,
            height=record.height,
            upload_bytes=upload.size,
            ms=round((time.monotonic() - started) * 1000),
        )
        return record

    def _media_for_post(self, uploader: str, media_ids: Sequence[str]) -> list[res.Media]:
        out = []
        for i, media_id in enumerate(media_ids):
            record = self.store.metadata(require_media_id(media_id, f"media_ids[{i}]"))
            if record is None:
                raise NotFound(
                    f"media_ids[{i}] ({media_id}) was never uploaded", reason="MEDIA_NOT_FOUND"
                )
            if uploader not in record.uploaders:
                raise PermissionDenied(
                    f"media_ids[{i}] ({media_id}) was uploaded by another user; "
                    "upload the image yourself to use it",
                    reason="NOT_UPLOADER",
                )
            out.append(record.to_proto())
        return out

    async def media_for_post(self, uploader: str, media_ids: Sequence[str]) -> list[res.Media]:
        """Describe a post's media ids: each must exist (NOT_FOUND) and have been uploaded
        by the post's author (PERMISSION_DENIED), so nobody attaches images they never had."""
        if not media_ids:
            return []
        return await asyncio.to_thread(self._media_for_post, uploader, list(media_ids))

    async def open(self, media_id: str, rendition: int) -> OpenedRendition:
        """Open a rendition for download: INVALID_ARGUMENT or NOT_FOUND otherwise."""
        media_id = require_media_id(media_id)
        which = rendition_from_proto(rendition)
        opened = await asyncio.to_thread(self.store.get, media_id, which)
        if opened is None:
            raise NotFound(f"image {media_id} not found", reason="MEDIA_NOT_FOUND")
        return opened

    @staticmethod
    async def chunks(
        opened: OpenedRendition, chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The rendition's bytes in chunk_bytes pieces (disk reads in a thread)."""
        while block := await asyncio.to_thread(opened.file.read, READ_BLOCK_BYTES):
            for start in range(0, len(block), chunk_bytes):
                yield block[start : start + chunk_bytes]
