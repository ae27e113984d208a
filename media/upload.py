"""Receiving an UploadImage stream: metadata first, then chunks, within a size cap."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mysocial.errors import InvalidArgument, ResourceExhausted
from mysocial.v1 import command_service_pb2 as cmd

MiB = 1024 * 1024
# The API promises "up to 1 MiB" per upload chunk.
MAX_UPLOAD_CHUNK_BYTES = MiB
# Uploads up to this size stay in memory; larger ones spill to an anonymous file.
SPOOL_IN_MEMORY_BYTES = MiB


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
