"""The QueryService servicer: translate between gRPC and the read side, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from media.library import RENDITION_TO_PROTO, MediaLibrary
from media.store import OpenedRendition
from mysocial.rpc import Ctx, stream, unary
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from query_service.service import ReadSide
from query_service.stream_limits import StreamLimits

# How long a read may wait for a consistency token when the call has no deadline.
DEFAULT_CONSISTENCY_WAIT_S = 10.0


def _deadline(context: Ctx) -> float:
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_CONSISTENCY_WAIT_S
    return max(0.0, remaining - max(0.05, remaining * 0.05))


class QueryServicer(q_grpc.QueryServiceServicer):
    # The grpc_service label of its metrics.
    SERVICE_NAME = q.DESCRIPTOR.services_by_name["QueryService"].full_name

    def __init__(self, read_side: ReadSide, media: MediaLibrary, limits: StreamLimits) -> None:
        self.read = read_side
        self.media = media
        self.limits = limits

    async def _prepare(self, token: str, context: Ctx) -> None:
        self.read.require_ready()
        await self.read.consistent(token, _deadline(context))

    @unary
    async def GetPost(self, request: q.GetPostRequest, context: Ctx) -> q.GetPostResponse:
        await self._prepare(request.consistency_token, context)
        return q.GetPostResponse(post=self.read.get_post(request.post_id))

    @unary
    async def BatchGetPosts(
        self, request: q.BatchGetPostsRequest, context: Ctx
    ) -> q.BatchGetPostsResponse:
        await self._prepare(request.consistency_token, context)
        return self.read.batch_get(list(request.post_ids))

    @unary
    async def ListPosts(self, request: q.ListPostsRequest, context: Ctx) -> q.ListPostsResponse:
        await self._prepare(request.consistency_token, context)
        return self.read.list_posts(request)

    @unary
    async def ListComments(
        self, request: q.ListCommentsRequest, context: Ctx
    ) -> q.ListCommentsResponse:
        await self._prepare(request.consistency_token, context)
        return self.read.list_comments(request)

    @unary
    async def GetTrending(
        self, request: q.GetTrendingRequest, context: Ctx
    ) -> q.GetTrendingResponse:
        self.read.require_ready()
        return self.read.trending(request.limit)

    @stream
    async def WatchPosts(  # type: ignore[override]  # writer API, see rpc.stream
        self, request: q.WatchPostsRequest, context: Ctx
    ) -> AsyncIterator[q.WatchPostsResponse]:
        self.limits.admit(context)
        await self._prepare(request.consistency_token, context)
        return self.read.watch_posts(list(request.post_ids))

    @stream
    async def WatchFeed(  # type: ignore[override]  # writer API, see rpc.stream
        self, request: q.WatchFeedRequest, context: Ctx
    ) -> AsyncIterator[bytes]:
        """Serialized WatchFeedResponse messages (shared by all readers of a version;
        see register())."""
        self.limits.admit(context)
        await self._prepare(request.consistency_token, context)
        return self.read.watch_feed(request.author_id, request.snapshot_size)

    @stream
    async def WatchTrending(  # type: ignore[override]  # writer API, see rpc.stream
        self, request: q.WatchTrendingRequest, context: Ctx
    ) -> AsyncIterator[q.WatchTrendingResponse]:
        self.limits.admit(context)
        self.read.require_ready()
        return self.read.watch_trending(request.limit)

    @stream
    async def GetImage(  # type: ignore[override]  # writer API, see rpc.stream
        self, request: q.GetImageRequest, context: Ctx
    ) -> AsyncIterator[q.GetImageResponse]:
        # Reads the media store only: images do not wait for the read models to load.
        return self._image(await self.media.open(request.media_id, request.rendition))

    async def _image(self, opened: OpenedRendition) -> AsyncIterator[q.GetImageResponse]:
        with opened.file:
            rec = opened.record
            yield q.GetImageResponse(
                info=q.ImageInfo(
                    media_id=opened.media_id,
                    rendition=RENDITION_TO_PROTO[opened.rendition],
                    content_type=rec.content_type,
                    width=rec.width,
                    height=rec.height,
                    size_bytes=opened.size_bytes,
                )
            )
            async for chunk in self.media.chunks(opened):
                yield q.GetImageResponse(chunk=chunk)


def _serialize(message: Any) -> bytes:
    """Streams may yield messages or bytes already serialized once for many readers."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def register(servicer: QueryServicer, server: grpc.aio.Server) -> None:
    """add_QueryServiceServicer_to_server, with streaming responses that may be bytes."""

    class Capture:
        handlers: dict[str, Any] = {}

        def add_generic_rpc_handlers(self, _: Any) -> None:
            pass

        def add_registered_method_handlers(self, _: str, handlers: Any) -> None:
            self.handlers = dict(handlers)

    capture = Capture()
    q_grpc.add_QueryServiceServicer_to_server(servicer, capture)  # type: ignore[arg-type]
    handlers = capture.handlers
    for name in ("WatchPosts", "WatchFeed", "WatchTrending", "GetImage"):
        h = handlers[name]
        handlers[name] = grpc.unary_stream_rpc_method_handler(
            h.unary_stream,
            request_deserializer=h.request_deserializer,
            response_serializer=_serialize,
        )
    full_name = q.DESCRIPTOR.services_by_name["QueryService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full_name, handlers),))
    server.add_registered_method_handlers(full_name, handlers)
