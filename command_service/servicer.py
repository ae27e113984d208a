"""The CommandService servicer: authenticate, call the domain function, publish.

It only translates between gRPC and plain Python (commands.py holds the rules).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import structlog

from command_service import commands
from command_service.commands import Limits, PreparedEvent
from command_service.directory import Directory, Entry
from command_service.publisher import Publisher, consistency_token
from command_service.quota import Quotas
from command_service.quota_hold import QuotaHold
from media.library import MediaLibrary, media_proto
from mysocial.auth import actor_from_metadata
from mysocial.config import Settings
from mysocial.errors import NotFound, PermissionDenied, QuotaExceeded, ResourceExhausted
from mysocial.rpc import Ctx, current_trace, time_left, unary
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc


def utc_now() -> datetime:
    return datetime.now(UTC)


OVERLOAD_RETRY_S = 0.5  # a worker at capacity drains in-flight commands within ~that


class CommandServicer(cmd_grpc.CommandServiceServicer):
    SERVICE_NAME = cmd.DESCRIPTOR.services_by_name[
        "CommandService"
    ].full_name  # the grpc_service label of its metrics

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        directory: Directory,
        media: MediaLibrary,
        quotas: Quotas,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._quotas = quotas
        self._hold = QuotaHold(settings.quota_hold_s)
        self._publisher = publisher
        self._directory = directory
        self._media = media
        self._clock = clock
        self._limits = Limits(settings.max_caption_chars, settings.max_comment_chars)
        self._secret = settings.effective_jwt_secret

    def _actor(self, context: Ctx) -> str:
        actor = actor_from_metadata(context.invocation_metadata(), self._secret)
        structlog.contextvars.bind_contextvars(user_id=actor)
        return actor

    async def _admit(self, context: Ctx, method: str) -> str:
        """The acting user, once the worker has room and the user has quota: refused
        otherwise (before any lookup or write), with RetryInfo; at once when the worker
        is at capacity, after a hold when the user is over quota (quota_hold.py)."""
        actor = self._actor(context)
        limit = self._settings.command_max_in_flight
        if limit and self._publisher.in_flight >= limit:
            raise ResourceExhausted(
                f"the command service is at capacity ({limit} commands in flight in this "
                "worker); retry after the delay in RetryInfo",
                reason="OVERLOADED",
                retry_after_s=OVERLOAD_RETRY_S,
            )
        await self._within_quota(context, lambda: self._quotas.charge(actor, method))
        return actor

    async def _within_quota(self, context: Ctx, charge: Callable[[], None]) -> None:
        """Spend a quota; past it the refusal is raised, held first when the user did
        not wait as an earlier refusal told it to (quota_hold.py)."""
        try:
            charge()
        except QuotaExceeded as refusal:
            await self._hold.refuse(refusal, time_left(context, self._settings.quota_hold_s))

    async def _publish(self, prepared: PreparedEvent, context: Ctx) -> str:
        delivered = await self._publisher.publish(
            prepared,
            current_trace(),
            time_left(context, self._settings.produce_timeout_s),
        )
        self._directory.record(prepared.event)
        return consistency_token(delivered, prepared.post_id)

    async def _live_post(self, post_id: str, context: Ctx) -> Entry:
        """The post, or NOT_FOUND if it does not exist (yet) or was deleted."""
        post = await self._directory.post(
            post_id, time_left(context, self._settings.produce_timeout_s)
        )
        if post is None or post.deleted:
            raise NotFound(f"post {post_id} not found", reason="POST_NOT_FOUND")
        return post

    @unary
    async def CreatePost(
        self, request: cmd.CreatePostRequest, context: Ctx
    ) -> cmd.CreatePostResponse:
        actor = await self._admit(context, "CreatePost")
        commands.validate_create_post(request, self._limits)  # bad input first, then lookups
        media = await self._media.media_for_post(actor, request.media_ids)
        prepared = commands.create_post(actor, request, self._clock(), self._limits, media=media)
        token = await self._publish(prepared, context)
        return cmd.CreatePostResponse(post_id=prepared.post_id, consistency_token=token)

    @unary
    async def DeletePost(
        self, request: cmd.DeletePostRequest, context: Ctx
    ) -> cmd.DeletePostResponse:
        actor = await self._admit(context, "DeletePost")
        prepared = commands.delete_post(actor, request, self._clock())
        post = await self._live_post(prepared.post_id, context)
        if post.author != actor:
            raise PermissionDenied("only the author may delete a post", reason="NOT_AUTHOR")
        token = await self._publish(prepared, context)
        return cmd.DeletePostResponse(post_id=prepared.post_id, consistency_token=token)

    @unary
    async def LikePost(self, request: cmd.LikePostRequest, context: Ctx) -> cmd.LikePostResponse:
        actor = await self._admit(context, "LikePost")
        prepared = commands.like_post(actor, request, self._clock())
        await self._live_post(prepared.post_id, context)
        token = await self._publish(prepared, context)
        return cmd.LikePostResponse(post_id=prepared.post_id, consistency_token=token)

    @unary
    async def UnlikePost(
        self, request: cmd.UnlikePostRequest, context: Ctx
    ) -> cmd.UnlikePostResponse:
        actor = await self._admit(context, "UnlikePost")
        prepared = commands.unlike_post(actor, request, self._clock())
        await self._live_post(prepared.post_id, context)
        token = await self._publish(prepared, context)
        return cmd.UnlikePostResponse(post_id=prepared.post_id, consistency_token=token)

    @unary
    async def AddComment(
        self, request: cmd.AddCommentRequest, context: Ctx
    ) -> cmd.AddCommentResponse:
        actor = await self._admit(context, "AddComment")
        prepared = commands.add_comment(actor, request, self._clock(), self._limits)
        await self._live_post(prepared.post_id, context)
        token = await self._publish(prepared, context)
        return cmd.AddCommentResponse(
            comment_id=prepared.comment_id, post_id=prepared.post_id, consistency_token=token
        )

    @unary
    async def DeleteComment(
        self, request: cmd.DeleteCommentRequest, context: Ctx
    ) -> cmd.DeleteCommentResponse:
        actor = await self._admit(context, "DeleteComment")
        prepared = commands.delete_comment(actor, request, self._clock())
        post = await self._live_post(prepared.post_id, context)
        comment = await self._directory.comment(
            prepared.post_id,
            prepared.comment_id,
            time_left(context, self._settings.produce_timeout_s),
        )
        if comment is None or comment.deleted:
            raise NotFound(f"comment {prepared.comment_id} not found", reason="COMMENT_NOT_FOUND")
        if actor not in (comment.author, post.author):
            raise PermissionDenied(
                "only the comment's author or the post's author may delete a comment",
                reason="NOT_AUTHOR",
            )
        token = await self._publish(prepared, context)
        return cmd.DeleteCommentResponse(
            post_id=prepared.post_id, comment_id=prepared.comment_id, consistency_token=token
        )

    @unary
    async def UploadImage(
        self, request_iterator: AsyncIterator[cmd.UploadImageRequest], context: Ctx
    ) -> cmd.UploadImageResponse:
        actor = self._actor(context)  # before reading a byte: anonymous uploads cost nothing
        await self._within_quota(context, lambda: self._quotas.charge_upload(actor))
        record = await self._media.upload(request_iterator, actor)
        return cmd.UploadImageResponse(media_id=record.media_id, media=media_proto(record))
