"""Images through the whole system (processor, command and query services against a
real broker): upload, post, download every rendition, rejections; and a kill -9 in the
middle of an upload. The pure processing and the store are in tests/unit/test_images.py."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from media.pipeline import process_image
from media.upload import SPOOL_IN_MEMORY_BYTES
from mysocial.config import Settings
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from tests.support.helpers import auth, free_port, make_settings, read_topic
from tests.support.images import (
    MAX_PIXELS,
    assert_no_private_metadata,
    camera_jpeg,
    decode,
    files_under,
    is_red,
    noise_jpeg,
    png_bomb,
    requests,
)
from tests.support.services import Service, System

SMALL_CAP = 300 * 1024  # the integration system's MYSOCIAL_MEDIA_MAX_BYTES


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
    posts = read_topic(system.settings, system.settings.topic("posts"))
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


# -- kill -9 in the middle of an upload ------------------------------------------------------


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
    assert len(source) > 2 * SPOOL_IN_MEMORY_BYTES  # the spool has spilled to disk
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
