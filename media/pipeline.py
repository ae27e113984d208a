"""Validating an image by its content and deriving its sanitized renditions.

Pure: bytes in, bytes out, no I/O beyond the given file object and no gRPC.

- The client's word (file name, declared size, extension) decides nothing: the bytes
  are decoded by Pillow, and only JPEG, PNG and WebP pass. Dimensions are checked
  from the header before any pixel is decoded, so a tiny file declaring a gigantic
  canvas (a decompression bomb) costs nothing.
- What is stored and served is re-encoded from the pixels alone, after applying the
  EXIF orientation: GPS position, camera serials, EXIF/XMP/ICC blobs and comments can
  not survive, and viewers that ignore EXIF orientation still show the picture upright.
- The media id is the SHA-256 of the stored original, so the same picture uploaded
  twice is stored once, and an id can never name two different contents.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import IO, Any

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from mysocial.errors import InvalidArgument


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

_SRGB = ImageCms.createProfile("sRGB")


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
