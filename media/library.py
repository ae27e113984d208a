"""What the services call: uploads, post attachments and downloads over a MediaStore.

This layer joins the others (upload -> pipeline -> store) and maps between them and
the API's messages; errors are mysocial.errors, which the RPC wrappers map to statuses.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

from media.pipeline import Rendition, configure_pillow, process_image
from media.store import LocalMediaStore, MediaRecord, MediaStore, OpenedRendition
from media.upload import ReceivedUpload, receive_upload
from mysocial import ids
from mysocial.config import Settings
from mysocial.errors import InvalidArgument, NotFound, PermissionDenied
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


def media_proto(record: MediaRecord) -> res.Media:
    """The description events and posts carry (the original's dimensions)."""
    return res.Media(
        media_id=record.media_id,
        content_type=record.content_type,
        width=record.width,
        height=record.height,
    )


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
            out.append(media_proto(record))
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
