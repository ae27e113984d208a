"""Test doubles for the `mysocial` CLI tests: protobuf builders, a fake gRPC error and
server stream, and rendering a rich renderable to plain text."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from rich.console import Console, RenderableType

from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import resources_pb2 as res

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def render_text(renderable: RenderableType, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def pid(n: int) -> str:
    """A UUID whose first 8 hex digits (the short id) are n."""
    return str(uuid.UUID(int=(n << 96) | n))


def post(n: int, **kw: object) -> res.Post:
    fields: dict[str, object] = {
        "post_id": pid(n),
        "author_id": "alice",
        "caption": f"caption {n}",
        "created_at": ts(1_700_000_000 + n),
    }
    return res.Post(**(fields | kw))  # type: ignore[arg-type]


class FakeRpcError(grpc.RpcError):
    def __init__(
        self, code: grpc.StatusCode | None, details: str | None, retry_after_s: float = 0.0
    ) -> None:
        """retry_after_s > 0: the status carries a RetryInfo with that delay."""
        super().__init__()
        self._code = code
        self._details = details
        self._trailing: tuple[tuple[str, bytes], ...] = ()
        if retry_after_s:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(round(retry_after_s * 1000))
            status = status_pb2.Status(code=code.value[0] if code else 2, message=details or "")
            status.details.add().Pack(retry)
            self._trailing = (("grpc-status-details-bin", status.SerializeToString()),)

    def trailing_metadata(self) -> Any:
        return self._trailing

    def code(self) -> grpc.StatusCode:
        if self._code is None:
            raise RuntimeError("no status yet")
        return self._code

    def details(self) -> str | None:
        return self._details


class FakeStream:
    """A server stream stand-in: yields messages, then optionally raises; records cancel."""

    def __init__(self, messages: list[qry.WatchFeedResponse], then: BaseException | None = None):
        self.messages = messages
        self.then = then
        self.cancelled = False
        self.consumed = 0

    def __iter__(self):
        for m in self.messages:
            self.consumed += 1
            yield m
        if self.then is not None:
            raise self.then

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def feed(kind: int, p: res.Post, **kw: object) -> qry.WatchFeedResponse:
    return qry.WatchFeedResponse(kind=kind, post=p, **kw)  # type: ignore[arg-type]
