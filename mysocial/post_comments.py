"""Decoding `post_comments` records (DESIGN.md, "Topics"), shared by its readers.

Both the query service (ListComments) and the command service's directory read this
topic instead of the raw `comments` events, which expire after 7 days. Besides the
comment itself, they need the headers: a record's `src-offset` says how far that
`comments` partition's events are reflected, which is what read-your-writes and the
directory's miss catch-up wait for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from google.protobuf.message import DecodeError

from mysocial.v1 import resources_pb2 as res

# Header names of the contract (the processor writes them).
SRC_PARTITION = "src-partition"
SRC_OFFSET = "src-offset"


# What confluent_kafka's Message.headers() may return (a list, in practice).
Headers = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None


class CommentRecord(NamedTuple):
    """One decoded record; `comment` is None for a tombstone (the comment is gone)."""

    post_id: str
    comment_id: str
    comment: res.Comment | None
    data: bytes | None  # the value as written: serialized `comment`
    src_partition: int  # the `comments` partition of the newest event it reflects
    src_offset: int  # that event's offset; -1 when the headers do not say


def decode(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    partition: int,
) -> CommentRecord:
    """Decode a record read from `partition`; ValueError if key or value is malformed.

    Missing or malformed headers are not an error (the comment still counts), the
    record just moves no position: src_offset is -1.
    """
    if key is None:
        raise ValueError("post_comments record without a key")
    post_id, slash, comment_id = key.decode().partition("/")
    if not slash or not post_id or not comment_id:
        raise ValueError(f"post_comments key is not <post_id>/<comment_id>: {key!r}")
    try:
        comment = res.Comment.FromString(value) if value is not None else None
    except DecodeError as exc:
        raise ValueError(f"undecodable post_comments value: {exc}") from None
    src_partition, src_offset = partition, -1
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, raw in pairs:
        try:
            if name == SRC_PARTITION and raw is not None:
                src_partition = int(raw)
            elif name == SRC_OFFSET and raw is not None:
                src_offset = int(raw)
        except ValueError:
            return CommentRecord(post_id, comment_id, comment, value, partition, -1)
    return CommentRecord(post_id, comment_id, comment, value, src_partition, src_offset)
