"""Images: unit tests of the pure processing and the store, then uploads and downloads
through real servers (processor, command and query services against a real broker)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from PIL import ExifTags, Image, ImageCms

from command_service import commands
from mysocial import media
from mysocial.config import Settings
from mysocial.errors import InvalidArgument, ResourceExhausted
from mysocial.kafka.topics import provision
from mysocial.media import LocalMediaStore, Rendition, process_image, receive_upload
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from mysocial.v1 import resources_pb2 as res
from tests.conftest import make_settings
from tests.support.helpers import auth, free_port, read_topic
from tests.support.services import Service, System

MAX_PIXELS = 40_000_000
SMALL_CAP = 300 * 1024  # the integration system's MYSOCIAL_MEDIA_MAX_BYTES
SERIAL = "SN-SECRET-0042"
RED = (255, 0, 0)


# -- building test images ------------------------------------------------------------------


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    exif[ExifTags.Base.Model] = "Model X"
    exif[ExifTags.Base.BodySerialNumber] = SERIAL
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0),
    }
    return exif


def camera_jpeg(
    width: int = 1600, height: int = 1000, orientation: int = 6, tint: int = 128
) -> bytes:
    """A JPEG as a phone writes it: pixels stored sideways (EXIF orientation 6), GPS
    position, camera serial, XMP, an ICC profile and a comment. A red block marks the
    stored top-left corner so the test can tell where it ends up."""
    im = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.new("L", (width, height), tint),
        ),
    )
    im.paste(RED, (0, 0, width // 8, height // 8))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    im.save(
        buf,
        "JPEG",
        quality=90,
        exif=exif_with_gps(orientation),
        comment=b"taken at home",
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">home address</x:xmpmeta>',
        icc_profile=icc,
    )
    return buf.getvalue()


def noise_jpeg(width: int, height: int, seed: int = 1) -> bytes:
    """A JPEG that compresses badly (random pixels), for uploads of a given heft."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, well-formed PNG whose header declares a gigantic canvas."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


def encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def assert_no_private_metadata(data: bytes) -> None:
    im = decode(data)
    exif = im.getexif()
    assert len(exif) == 0, dict(exif)
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
    for key in ("exif", "icc_profile", "xmp", "comment", "XML:com.adobe.xmp"):
        assert key not in im.info, key
    for secret in (SERIAL.encode(), b"Exif\x00", b"home address", b"taken at home", b"TestCam"):
        assert secret not in data, secret


def is_red(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return r > 200 and g < 60 and b < 60


# -- unit tests: processing ----------------------------------------------------------------------


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


# -- unit tests: receiving a stream ------------------------------------------------------------


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


def requests(
    data: bytes, chunk: int = 64 * 1024, declared: int | None = None
) -> list[cmd.UploadImageRequest]:
    size = len(data) if declared is None else declared
    out = [
        cmd.UploadImageRequest(metadata=cmd.ImageUploadMetadata(file_name="a.jpg", size_bytes=size))
    ]
    out += [cmd.UploadImageRequest(chunk=data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return out


def receive(parts: Parts, cap: int = 1024 * 1024) -> media.ReceivedUpload:
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
            requests(b"x" * (media.MAX_UPLOAD_CHUNK_BYTES + 1), chunk=2 * 1024 * 1024),
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


# -- unit tests: the store -----------------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    """Every file below root (temporary ones included), relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


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


# -- through real servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("images")
    settings = make_settings(
        kafka_bootstrap,
        processor_state_dir=str(root / "state"),
        media_dir=str(root / "media"),
        media_max_bytes=SMALL_CAP,
    )
    provision(settings)
    (root / "logs").mkdir()
    with System(settings, root / "logs") as running:
        yield running


def media_root(system: System) -> Path:
    return Path(system.settings.media_dir)


def upload(
    stub: cmd_grpc.CommandServiceStub,
    data: bytes,
    user: str = "alice",
    chunk: int = 64 * 1024,
    declared: int | None = None,
) -> cmd.UploadImageResponse:
    return stub.UploadImage(iter(requests(data, chunk, declared)), metadata=auth(user), timeout=30)


def download(
    stub: q_grpc.QueryServiceStub, media_id: str, rendition: q.ImageRendition.ValueType
) -> tuple[q.ImageInfo, bytes, list[int]]:
    messages = list(
        stub.GetImage(q.GetImageRequest(media_id=media_id, rendition=rendition), timeout=30)
    )
    assert messages and messages[0].WhichOneof("part") == "info"
    assert all(m.WhichOneof("part") == "chunk" for m in messages[1:])
    chunks = [len(m.chunk) for m in messages[1:]]
    return messages[0].info, b"".join(m.chunk for m in messages[1:]), chunks


def test_upload_post_and_download_every_rendition(system: System) -> None:
    commands, queries = system.commands(), system.queries()
    source = camera_jpeg()
    assert len(source) < SMALL_CAP
    uploaded = upload(commands, source, chunk=10_000)
    mid = uploaded.media_id
    assert mid == process_image(source, MAX_PIXELS).media_id
    assert (uploaded.media.media_id, uploaded.media.content_type) == (mid, "image/jpeg")
    assert (uploaded.media.width, uploaded.media.height) == (1000, 1600)

    post = commands.CreatePost(
        cmd.CreatePostRequest(caption="view", media_ids=[mid], request_id="img-post"),
        metadata=auth("alice"),
    )
    got = queries.GetPost(
        q.GetPostRequest(post_id=post.post_id, consistency_token=post.consistency_token),
        timeout=30,
    ).post
    assert list(got.media_ids) == [mid]
    assert [(m.media_id, m.content_type, m.width, m.height) for m in got.media] == [
        (mid, "image/jpeg", 1000, 1600)
    ]

    expected = {
        q.IMAGE_RENDITION_UNSPECIFIED: (q.IMAGE_RENDITION_ORIGINAL, (1000, 1600)),
        q.IMAGE_RENDITION_ORIGINAL: (q.IMAGE_RENDITION_ORIGINAL, (1000, 1600)),
        q.IMAGE_RENDITION_FEED: (q.IMAGE_RENDITION_FEED, (675, 1080)),
        q.IMAGE_RENDITION_THUMBNAIL: (q.IMAGE_RENDITION_THUMBNAIL, (160, 256)),
    }
    for asked, (rendition, size) in expected.items():
        info, data, chunks = download(queries, mid, asked)
        assert (info.media_id, info.rendition, info.content_type) == (mid, rendition, "image/jpeg")
        assert (info.width, info.height) == size and info.size_bytes == len(data)
        assert max(chunks) <= 64 * 1024
        im = decode(data)
        assert im.format == "JPEG" and im.size == size
        assert is_red(im.getpixel((im.width - 3, 3)))  # type: ignore[arg-type]
        assert not is_red(im.getpixel((3, 3)))  # type: ignore[arg-type]
        assert_no_private_metadata(data)
        box = {q.IMAGE_RENDITION_FEED: 1080, q.IMAGE_RENDITION_THUMBNAIL: 256}.get(rendition)
        assert box is None or max(im.size) == box  # fits the box, touching it
    meta = json.loads((media_root(system) / mid[:2] / mid[2:4] / mid / "meta.json").read_text())
    assert meta["uploaders"] == ["alice"] and meta["content_type"] == "image/jpeg"


def test_duplicate_upload_is_stored_once(system: System) -> None:
    commands = system.commands()
    source = camera_jpeg(tint=42)
    root = media_root(system)
    before = files_under(root)
    first = upload(commands, source)
    added = sorted(set(files_under(root)) - set(before))
    mid = first.media_id
    assert [Path(f).name for f in added] == [
        "feed.jpg",
        "meta.json",
        "original.jpg",
        "thumbnail.jpg",
    ]
    assert all(f.startswith(f"{mid[:2]}/{mid[2:4]}/{mid}/") for f in added)
    again = upload(commands, source, chunk=3333)
    by_bob = upload(commands, source, user="bob")
    assert again.media_id == by_bob.media_id == mid
    assert len(files_under(root)) == len(before) + 4
    # Bob uploaded the same picture himself, so he may post it too.
    commands.CreatePost(cmd.CreatePostRequest(media_ids=[mid]), metadata=auth("bob"))


def over_cap_stream(total: int, pulled: list[int]) -> Iterator[cmd.UploadImageRequest]:
    """Chunks at a steady pace (like a real network), so what the client got to send
    before the status arrived measures how early the server cut the stream off (an
    unthrottled client could push megabytes into socket buffers meanwhile)."""
    yield cmd.UploadImageRequest(metadata=cmd.ImageUploadMetadata(file_name="big.jpg"))
    block = os.urandom(64 * 1024)
    for _ in range(total // len(block)):
        pulled.append(1)
        yield cmd.UploadImageRequest(chunk=block)
        time.sleep(0.01)


REJECTIONS: list[tuple[str, Iterable[cmd.UploadImageRequest] | None, grpc.StatusCode, str]] = [
    (
        "text-as-jpg",
        requests(b"just some text, not a photo\n" * 50),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an image",
    ),
    ("truncated", requests(camera_jpeg()[:25_000]), grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    ("png-bomb", requests(png_bomb()), grpc.StatusCode.INVALID_ARGUMENT, "pixels"),
    (
        "declared-over-cap",
        requests(b"x" * 1000, declared=SMALL_CAP + 1),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        str(SMALL_CAP),
    ),
    ("empty", requests(b""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("no-messages", [], grpc.StatusCode.INVALID_ARGUMENT, "metadata"),
    (
        "chunk-first",
        [cmd.UploadImageRequest(chunk=b"\xff\xd8\xff")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "metadata",
    ),
    ("over-cap-streamed", None, grpc.StatusCode.RESOURCE_EXHAUSTED, str(SMALL_CAP)),
]


@pytest.mark.parametrize(
    ("name", "messages", "code", "words"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_rejected_uploads_store_nothing(
    system: System,
    name: str,
    messages: Iterable[cmd.UploadImageRequest] | None,
    code: grpc.StatusCode,
    words: str,
) -> None:
    commands = system.commands()
    root = media_root(system)
    before = files_under(root)
    pulled: list[int] = []
    total = 8 * 1024 * 1024
    stream = over_cap_stream(total, pulled) if messages is None else iter(messages)
    with pytest.raises(grpc.RpcError) as err:
        commands.UploadImage(stream, metadata=auth("alice"), timeout=30)
    assert err.value.code() == code, err.value.details()
    assert words in (err.value.details() or "")
    assert "Traceback" not in (err.value.details() or "")
    assert files_under(root) == before  # nothing new, not even a temp file
    if messages is None:  # cut off: the client was not made to send all 8 MiB
        assert len(pulled) * 64 * 1024 < total // 4


def test_upload_needs_a_token(system: System) -> None:
    with pytest.raises(grpc.RpcError) as err:
        system.commands().UploadImage(iter(requests(camera_jpeg())), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_post_with_unknown_or_foreign_media_is_rejected(system: System) -> None:
    commands = system.commands()
    carols = upload(commands, camera_jpeg(tint=7), user="carol").media_id
    cases = [
        ([carols], grpc.StatusCode.PERMISSION_DENIED, "another user"),
        (["0" * 64], grpc.StatusCode.NOT_FOUND, "never uploaded"),
        (["not-a-hash"], grpc.StatusCode.INVALID_ARGUMENT, "media_ids[0]"),
    ]
    for media_ids, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            commands.CreatePost(
                cmd.CreatePostRequest(caption="mine", media_ids=media_ids), metadata=auth("dave")
            )
        assert err.value.code() == code and words in (err.value.details() or "")
    posts = read_topic(system.settings.bootstrap, system.settings.topic("posts"))
    actors = set()
    for rec in posts:
        event = ev.Event()
        event.ParseFromString(rec.value or b"")
        actors.add(event.actor_user_id)
    assert "dave" not in actors  # nothing was published for the rejected posts


def test_get_image_errors(system: System) -> None:
    queries = system.queries()
    cases = [
        (q.GetImageRequest(media_id="f" * 64), grpc.StatusCode.NOT_FOUND),
        (q.GetImageRequest(media_id="F" * 64), grpc.StatusCode.INVALID_ARGUMENT),
        (q.GetImageRequest(media_id=""), grpc.StatusCode.INVALID_ARGUMENT),
        (q.GetImageRequest(media_id="../" * 21 + "a"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(queries.GetImage(request, timeout=10))
        assert err.value.code() == code
    mid = upload(system.commands(), camera_jpeg(tint=99)).media_id
    with pytest.raises(grpc.RpcError) as err:
        list(queries.GetImage(q.GetImageRequest(media_id=mid, rendition=99), timeout=10))  # type: ignore[arg-type]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- kill -9 in the middle of an upload ------------------------------------------------------------


def test_kill_during_upload_leaves_no_partial_file(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    settings: Settings = make_settings(
        kafka_bootstrap, media_dir=str(tmp_path / "media"), command_addr=addr
    )
    provision(settings)
    service = Service(
        "command_service", settings, addr, log_dir / "command.log", "mysocial.v1.CommandService"
    )
    source = noise_jpeg(1600, 1200)
    assert len(source) > 2 * media.SPOOL_IN_MEMORY_BYTES  # the spool has spilled to disk
    expected = process_image(source, MAX_PIXELS).media_id
    root = Path(settings.media_dir)
    chunk = 64 * 1024
    sent = threading.Event()
    errors: list[grpc.RpcError] = []

    def slow() -> Iterator[cmd.UploadImageRequest]:
        yield cmd.UploadImageRequest(
            metadata=cmd.ImageUploadMetadata(file_name="slow.jpg", size_bytes=len(source))
        )
        for n, start in enumerate(range(0, len(source), chunk)):
            if n == 20:  # 1.25 MiB sent: past the in-memory spool
                sent.set()
            yield cmd.UploadImageRequest(chunk=source[start : start + chunk])
            time.sleep(0.08)  # ~15 chunks (1.2 s) still to go when the kill comes

    def client() -> None:
        with grpc.insecure_channel(addr) as channel:
            try:
                cmd_grpc.CommandServiceStub(channel).UploadImage(
                    slow(), metadata=auth("alice"), timeout=60
                )
            except grpc.RpcError as exc:
                errors.append(exc)

    service.start()
    try:
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        assert sent.wait(30)
        service.kill()
        thread.join(30)
        assert errors, "the upload cannot have succeeded: its server was killed"
        assert files_under(root) == []  # no final file, no metadata, not even a temp file

        service.start()
        with grpc.insecure_channel(addr) as channel:
            stub = cmd_grpc.CommandServiceStub(channel)
            assert upload(stub, source).media_id == expected
        mid = expected
        names = [Path(f).name for f in files_under(root)]
        assert sorted(names) == ["feed.jpg", "meta.json", "original.jpg", "thumbnail.jpg"]
        assert all(f.startswith(f"{mid[:2]}/{mid[2:4]}/{mid}/") for f in files_under(root))
    finally:
        service.stop()
