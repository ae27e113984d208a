"""Trace context: the ids that follow a command from its gRPC call to the streams.

A command's correlation id (the caller's `x-correlation-id`, or a minted one) and the
W3C `traceparent` it was sent with travel inside its event (Event.correlation_id,
Event.traceparent), then as repeated Kafka headers of the posts_with_counts record
that includes it, then in the Watch messages that show it. One id therefore finds
the call's log lines, its event, the projection record and the stream message.
A record or a message that coalesces many events keeps at most MAX_TRACES of them,
the newest, so a hot post does not grow its headers without bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

TRACEPARENT_HEADER = "traceparent"  # gRPC metadata and Kafka header (W3C name)
CORRELATION_ID_HEADER = "correlation-id"  # Kafka header
MAX_TRACES = 16

# Version 00 of https://www.w3.org/TR/trace-context/#traceparent-header: version,
# trace id, parent span id, flags; all-zero ids are invalid.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def clean_traceparent(value: str | bytes | None) -> str:
    """The caller's traceparent if it is a valid version-00 one, else "" (a malformed
    trace context is dropped, as the W3C recommendation says, never an error)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return ""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or set(match[1]) == {"0"} or set(match[2]) == {"0"}:
        return ""
    return match[0]


def trace_id(traceparent: str) -> str:
    """The trace id of a clean traceparent ("" when there is none)."""
    return traceparent[3:35] if traceparent else ""


def merge(older: Sequence[str], newer: Iterable[str]) -> list[str]:
    """older then newer without repeats, keeping the newest MAX_TRACES."""
    out = list(older)
    for item in newer:
        if item and item not in out:
            out.append(item)
    return out[-MAX_TRACES:]


def from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[list[str], list[str]]:
    """(correlation ids, traceparents) a record's repeated headers carry."""
    ids: list[str] = []
    parents: list[str] = []
    for key, value in headers or ():
        if value is None:
            continue
        if key == CORRELATION_ID_HEADER:
            ids.append(value.decode("utf-8", "replace"))
        elif key == TRACEPARENT_HEADER:
            parents.append(value.decode("ascii", "replace"))
    return ids, parents


def to_headers(ids: Iterable[str], parents: Iterable[str]) -> list[tuple[str, bytes]]:
    """Repeated headers, one per id: a Kafka header may occur more than once."""
    return [(CORRELATION_ID_HEADER, i.encode()) for i in ids] + [
        (TRACEPARENT_HEADER, p.encode()) for p in parents
    ]
