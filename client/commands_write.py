"""Write-side subcommands: post (with image uploads), like, unlike, comment, uncomment,
delete. Each sends one command to the command service and prints its response."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from client.session import TRANSFER_TIMEOUT_S, Client, CliError, retrying
from mysocial.v1 import command_service_pb2 as cmd

UPLOAD_CHUNK_BYTES = 256 * 1024


def upload_requests(
    stream: BinaryIO, file_name: str, size: int, chunk_bytes: int = UPLOAD_CHUNK_BYTES
) -> Iterator[cmd.UploadImageRequest]:
    """The UploadImage stream: metadata first (lets the server reject an oversized file
    before any byte), then the bytes in chunks, read lazily so memory stays flat."""
    yield cmd.UploadImageRequest(
        metadata=cmd.ImageUploadMetadata(file_name=file_name, size_bytes=size)
    )
    while chunk := stream.read(chunk_bytes):
        yield cmd.UploadImageRequest(chunk=chunk)


def cmd_post(args: argparse.Namespace, client: Client) -> int:
    with contextlib.ExitStack() as stack:
        # Open every image first: a typo in the last path should not upload the others.
        files: list[tuple[Path, BinaryIO, int]] = []
        for name in args.image or ():
            path = Path(name)
            try:
                opened = stack.enter_context(path.open("rb"))
                files.append((path, opened, os.fstat(opened.fileno()).st_size))
            except OSError as exc:
                raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
        with client.commands() as stub:
            media_ids: list[str] = []
            for path, f, size in files:
                uploaded = stub.UploadImage(
                    upload_requests(f, path.name, size),
                    timeout=TRANSFER_TIMEOUT_S,
                    metadata=client.metadata,
                )
                media_ids.append(uploaded.media_id)
                print(f"uploaded {path}: {uploaded.media_id}", file=sys.stderr)
            resp = retrying(
                stub.CreatePost,
                cmd.CreatePostRequest(
                    caption=args.caption, media_ids=media_ids, request_id=args.request_id or ""
                ),
                client.metadata,
            )
    client.emit(resp, f"post created: {resp.post_id}")
    return 0


def cmd_like(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = retrying(
            stub.LikePost,
            cmd.LikePostRequest(post_id=args.post_id),
            client.metadata,
        )
    client.emit(resp, f"liked {resp.post_id}")
    return 0


def cmd_unlike(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = retrying(
            stub.UnlikePost,
            cmd.UnlikePostRequest(post_id=args.post_id),
            client.metadata,
        )
    client.emit(resp, f"unliked {resp.post_id}")
    return 0


def cmd_comment(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = retrying(
            stub.AddComment,
            cmd.AddCommentRequest(post_id=args.post_id, text=args.text),
            client.metadata,
        )
    client.emit(resp, f"comment added: {resp.comment_id} (post {resp.post_id})")
    return 0


def cmd_uncomment(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = retrying(
            stub.DeleteComment,
            cmd.DeleteCommentRequest(post_id=args.post_id, comment_id=args.comment_id),
            client.metadata,
        )
    client.emit(resp, f"comment deleted: {resp.comment_id} (post {resp.post_id})")
    return 0


def cmd_delete(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = retrying(
            stub.DeletePost,
            cmd.DeletePostRequest(post_id=args.post_id),
            client.metadata,
        )
    client.emit(resp, f"post deleted: {resp.post_id}")
    return 0
