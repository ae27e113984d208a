"""Images without servers: processing (orientation, private metadata, formats, rejected
content), receiving an upload stream, and the content-addressed store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from command_service import commands
from media.pipeline import Rendition, process_image
from media.store import LocalMediaStore
from media.upload import (
    MAX_UPLOAD_CHUNK_BYTES,
    ReceivedUpload,
    receive_upload,
)
from mysocial.errors import InvalidArgument, ResourceExhausted
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import resources_pb2 as res
from tests.support.images import (
    MAX_PIXELS,
    assert_no_private_metadata,
    camera_jpeg,
    decode,
    encode,
    exif_with_gps,
    files_under,
    is_red,
    png_bomb,
    requests,
)


def test_orientation_applied_and_private_metadata_stripped() -> None:
    source = camera_jpeg()
    raw = decode(source)
    assert raw.size == (1600, 1000) and raw.getexif().get_ifd(ExifTags.IFD.GPSInfo)

    image = process_image(source, MAX_PIXELS)

    assert image.content_type == "image/jpeg" and image.source_bytes == len(source)
    original = image.renditions[Rendition.ORIGINAL]
    assert (original.width, original.height) == (1000, 1600)  # swapped: orientation 6
    out = decode(original.data)
    assert out.format == "JPEG" and out.size == (1000, 1600)
    # Orientation 6 = rotate 90 degrees clockwise to view: stored top-left -> top-right.
    assert is_red(out.getpixel((out.width - 10, 10)))  # type: ignore[arg-type]
    assert not is_red(out.getpixel((10, 10)))  # type: ignore[arg-type]
    feed, thumb = image.renditions[Rendition.FEED], image.renditions[Rendition.THUMBNAIL]
    assert (feed.width, feed.height) == (675, 1080)
    assert (thumb.width, thumb.height) == (160, 256)
    for encoded in image.renditions.values():
        assert_no_private_metadata(encoded.data)
        assert decode(encoded.data).size == (encoded.width, encoded.height)


def test_media_id_is_the_hash_of_the_stored_original_and_repeats() -> None:
    source = camera_jpeg()
    a, b = process_image(source, MAX_PIXELS), process_image(io.BytesIO(source), MAX_PIXELS)
    assert a.media_id == b.media_id == hashlib.sha256(a.original.data).hexdigest()
    assert process_image(camera_jpeg(tint=10), MAX_PIXELS).media_id != a.media_id


def test_png_and_webp_keep_their_format_and_alpha() -> None:
    rgba = Image.new("RGBA", (250, 200), (0, 128, 255, 100))
    png = process_image(encode(rgba, "PNG"), MAX_PIXELS)
    assert png.content_type == "image/png"
    assert decode(png.original.data).mode == "RGBA"
    assert decode(png.original.data).getpixel((5, 5)) == (0, 128, 255, 100)
    # Small enough for every box: all renditions share the original's file.
    assert {e.file_name for e in png.renditions.values()} == {"original.png"}
    paletted = Image.new("P", (40, 40))
    paletted.info["transparency"] = 0
    assert decode(process_image(encode(paletted, "PNG"), MAX_PIXELS).original.data).mode == "RGBA"
    webp = process_image(encode(rgba, "WEBP", exif=exif_with_gps(6)), MAX_PIXELS)
    assert webp.content_type == "image/webp" and webp.original.width == 200  # rotated
    assert_no_private_metadata(webp.original.data)


def apng() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"", "EMPTY_UPLOAD", "empty"),
        (b"this is a text file renamed to photo.jpg\n" * 20, "NOT_AN_IMAGE", "not an image"),
        (camera_jpeg()[:30_000], "TRUNCATED_IMAGE", "truncated"),
        (png_bomb(), "TOO_MANY_PIXELS", "pixels"),
        (png_bomb(7000, 7000), "TOO_MANY_PIXELS", "pixels"),
        (encode(Image.new("RGB", (8, 8)), "GIF"), "UNSUPPORTED_FORMAT", "GIF"),
        (encode(Image.new("RGB", (8, 8)), "BMP"), "UNSUPPORTED_FORMAT", "BMP"),
        (encode(Image.new("RGB", (8, 8)), "TIFF"), "UNSUPPORTED_FORMAT", "TIFF"),
        (apng(), "ANIMATED_IMAGE", "animated"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "CORRUPT_IMAGE", "corrupt"),
    ],
    ids=[
        "empty",
        "text",
        "truncated",
        "bomb",
        "over-pixel-cap",
        "gif",
        "bmp",
        "tiff",
        "apng",
        "png-junk",
    ],
)
def test_rejected_by_content(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        process_image(data, MAX_PIXELS)
    assert err.value.reason == reason
    assert words in err.value.message
    assert err.value.field == "chunk"


def test_create_post_carries_the_resolved_media() -> None:
    described = [res.Media(media_id="a" * 64, content_type="image/png", width=3, height=2)]
    req = cmd.CreatePostRequest(caption="c", media_ids=["a" * 64])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = commands.create_post("alice", req, now, commands.Limits(), media=described).event
    assert list(event.post_created.media) == described
    with pytest.raises(ValueError):
        commands.create_post("alice", req, now, commands.Limits(), media=[])


# -- receiving a stream --------------------------------------------------------------------


class Parts:
    """An async upload stream that counts how many messages the server pulled."""

    def __init__(self, messages: list[cmd.UploadImageRequest]) -> None:
        self.messages, self.pulled = messages, 0

    async def _gen(self) -> AsyncIterator[cmd.UploadImageRequest]:
        for m in self.messages:
            self.pulled += 1
            yield m

    def __aiter__(self) -> AsyncIterator[cmd.UploadImageRequest]:
        return self._gen()


def receive(parts: Parts, cap: int = 1024 * 1024) -> ReceivedUpload:
    return asyncio.run(receive_upload(parts, cap))


def test_receive_upload_reassembles_the_bytes() -> None:
    data = os.urandom(200_000)
    got = receive(Parts(requests(data, chunk=7000)))
    assert got.size == len(data) and got.file.read() == data and got.file_name == "a.jpg"


def test_receive_upload_cuts_an_oversized_stream_off_early() -> None:
    parts = Parts(requests(os.urandom(4 * 1024 * 1024), declared=0))  # size unknown
    with pytest.raises(ResourceExhausted):
        receive(parts, cap=300 * 1024)
    assert parts.pulled == 1 + 5  # metadata + the chunk that crossed 300 KiB; no more
    declared = Parts(requests(os.urandom(400 * 1024)))
    with pytest.raises(ResourceExhausted):
        receive(declared, cap=300 * 1024)
    assert declared.pulled == 1  # the declared size alone was enough


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ([], "metadata", "NO_METADATA"),
        ([cmd.UploadImageRequest(chunk=b"abc")], "metadata", "NO_METADATA"),
        (requests(b""), "chunk", "EMPTY_UPLOAD"),
        (requests(b"abc") + requests(b"abc"), "metadata", "METADATA_REPEATED"),
        (requests(b"abcdef", declared=10), "metadata.size_bytes", "SIZE_MISMATCH"),
        (requests(b"abcdef", declared=3, chunk=2), "metadata.size_bytes", "SIZE_MISMATCH"),
        (
            requests(b"x" * (MAX_UPLOAD_CHUNK_BYTES + 1), chunk=2 * 1024 * 1024),
            "chunk",
            "CHUNK_TOO_LARGE",
        ),
    ],
    ids=["no-messages", "chunk-first", "empty", "metadata-twice", "short", "long", "huge-chunk"],
)
def test_receive_upload_rejects_malformed_streams(
    messages: list[cmd.UploadImageRequest], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        receive(Parts(messages), cap=10 * 1024 * 1024)
    assert (err.value.field, err.value.reason) == (field, reason)


# -- the store ------------------------------------------------------------------------------


def test_store_is_content_addressed_and_records_each_uploader(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    image = process_image(camera_jpeg(), MAX_PIXELS)
    assert not store.exists(image.media_id) and store.metadata(image.media_id) is None
    record = store.put(image, "alice")
    mid = image.media_id
    base = f"{mid[:2]}/{mid[2:4]}/{mid}"
    assert files_under(store.root) == [
        f"{base}/feed.jpg",
        f"{base}/meta.json",
        f"{base}/original.jpg",
        f"{base}/thumbnail.jpg",
    ]
    assert store.exists(mid) and record.uploaders == ("alice",)
    assert store.put(image, "alice") == record  # a duplicate writes nothing
    assert store.put(image, "bob").uploaders == ("alice", "bob")
    assert len(files_under(store.root)) == 4
    meta = json.loads((store.root / base / "meta.json").read_text())
    assert meta["uploaders"] == ["alice", "bob"]
    assert meta["renditions"]["original"] == {
        "file": "original.jpg",
        "content_type": "image/jpeg",
        "width": 1000,
        "height": 1600,
        "size_bytes": len(image.original.data),
    }
    opened = store.get(mid, Rendition.THUMBNAIL)
    assert opened is not None
    with opened.file:
        assert opened.file.read() == image.renditions[Rendition.THUMBNAIL].data
    # Reopening the folder (another process) sees the same record.
    assert LocalMediaStore(store.root).metadata(mid) == store.metadata(mid)


def test_rendition_files_without_metadata_do_not_exist(tmp_path: Path) -> None:
    """A crash after the renditions but before meta.json: the id does not exist, and the
    next upload completes it."""
    store = LocalMediaStore(tmp_path / "media")
    image = process_image(camera_jpeg(), MAX_PIXELS)
    folder = store.media_dir(image.media_id)
    folder.mkdir(parents=True)
    (folder / "original.jpg").write_bytes(image.original.data)
    assert not store.exists(image.media_id)
    assert store.get(image.media_id, Rendition.ORIGINAL) is None
    assert store.put(image, "alice").uploaders == ("alice",)
    assert store.exists(image.media_id)


def test_stale_temp_files_are_removed_at_start_up(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    stale, fresh = store.temp_dir / "original.jpg.abc.tmp", store.temp_dir / "meta.json.def.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    LocalMediaStore(store.root)
    assert not stale.exists() and fresh.exists()


def test_store_refuses_ids_that_are_not_hashes(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")
