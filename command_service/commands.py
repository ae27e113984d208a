"""Command handling as plain functions: validate a request, build its event.

Nothing here does I/O, so every rule (limits, id formats, which topic and key an
event goes to, deterministic ids for retried commands) is unit-testable without a
broker or a server. The servicer authenticates, calls one of these, and publishes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial import ids
from mysocial.errors import InvalidArgument
from mysocial.kafka import topics
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res

MAX_MEDIA_PER_POST = 10


@dataclass(frozen=True)
class Limits:
    """Validation limits (configurable, see Settings)."""

    max_caption_chars: int = 2200
    max_comment_chars: int = 1000
    max_media: int = MAX_MEDIA_PER_POST


@dataclass(frozen=True)
class PreparedEvent:
    """An event ready to publish: its contract topic, partition key and payload."""

    topic: str
    key: str
    event: ev.Event
    post_id: str
    comment_id: str = ""

    @property
    def event_type(self) -> str:
        kind = self.event.WhichOneof("payload")
        return EVENT_TYPES[kind] if kind else ""


EVENT_TYPES = {
    "post_created": "PostCreated",
    "post_deleted": "PostDeleted",
    "post_liked": "PostLiked",
    "post_unliked": "PostUnliked",
    "comment_added": "CommentAdded",
    "comment_deleted": "CommentDeleted",
}


def _envelope(actor: str, now: datetime, event_id: str) -> ev.Event:
    ts = Timestamp()
    ts.FromDatetime(now)
    return ev.Event(event_id=event_id, occurred_at=ts, actor_user_id=actor)


def _request_id(value: str) -> str:
    if value and not ids.is_request_id(value):
        raise InvalidArgument(
            f"request_id must be 1-{ids.REQUEST_ID_MAX} printable ASCII characters",
            field="request_id",
        )
    return value


def _text(value: str, field: str, limit: int, *, required: bool) -> str:
    text = unicodedata.normalize("NFC", value)
    if required and not text.strip():
        raise InvalidArgument(f"{field} must not be empty", field=field)
    if len(text) > limit:
        raise InvalidArgument(
            f"{field} is {len(text)} characters; the limit is {limit}", field=field
        )
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise InvalidArgument(f"{field} contains control characters", field=field)
    return text


def event_id_for(command: str, actor: str, request_id: str, entity: str) -> str:
    """Event id of a command: deterministic with a request_id, so retries repeat it."""
    return ids.derive_id(f"event:{command}:{entity}", actor, request_id)


def validate_create_post(req: cmd.CreatePostRequest, limits: Limits) -> tuple[str, str]:
    """Check a CreatePost request (request_id, caption, media id formats and count);
    returns (request_id, normalized caption). Separate so the servicer can reject bad
    input before looking the media ids up in the media store."""
    request_id = _request_id(req.request_id)
    caption = _text(req.caption, "caption", limits.max_caption_chars, required=False)
    if len(req.media_ids) > limits.max_media:
        raise InvalidArgument(
            f"media_ids has {len(req.media_ids)} entries; a post takes at most {limits.max_media}",
            field="media_ids",
        )
    seen: set[str] = set()
    for i, media_id in enumerate(req.media_ids):
        if not ids.is_media_id(media_id):
            raise InvalidArgument(
                f"media_ids[{i}] must be 64 lowercase hex digits", field=f"media_ids[{i}]"
            )
        if media_id in seen:
            raise InvalidArgument(f"media_ids[{i}] is repeated", field=f"media_ids[{i}]")
        seen.add(media_id)
    return request_id, caption


def create_post(
    actor: str,
    req: cmd.CreatePostRequest,
    now: datetime,
    limits: Limits,
    media: list[res.Media] | None = None,
) -> PreparedEvent:
    """PostCreated on `posts`, keyed by the author so an author's posts stay ordered.

    `media` is the resolved description of req.media_ids (checked by the caller
    against the media store), in the same order; when None the ids are only
    format-checked. Posts without media are allowed (caption-only posts).
    """
    request_id, caption = validate_create_post(req, limits)
    if media is not None and [m.media_id for m in media] != list(req.media_ids):
        raise ValueError("media must describe req.media_ids, in order")
    post_id = ids.derive_id("post", actor, request_id)
    event = _envelope(actor, now, event_id_for("create", actor, request_id, post_id))
    described = media if media is not None else [res.Media(media_id=m) for m in req.media_ids]
    event.post_created.CopyFrom(ev.PostCreated(post_id=post_id, caption=caption, media=described))
    return PreparedEvent(topics.POSTS, actor, event, post_id)


def delete_post(actor: str, req: cmd.DeletePostRequest, now: datetime) -> PreparedEvent:
    """PostDeleted on `posts`, keyed by the author (the actor must be the author)."""
    request_id = _request_id(req.request_id)
    post_id = ids.require_entity_id(req.post_id)
    event = _envelope(actor, now, event_id_for("delete", actor, request_id, post_id))
    event.post_deleted.post_id = post_id
    return PreparedEvent(topics.POSTS, actor, event, post_id)


def like_post(actor: str, req: cmd.LikePostRequest, now: datetime) -> PreparedEvent:
    """PostLiked on `likes`, keyed by post id so a post's likes stay ordered."""
    request_id = _request_id(req.request_id)
    post_id = ids.require_entity_id(req.post_id)
    event = _envelope(actor, now, event_id_for("like", actor, request_id, post_id))
    event.post_liked.post_id = post_id
    return PreparedEvent(topics.LIKES, post_id, event, post_id)


def unlike_post(actor: str, req: cmd.UnlikePostRequest, now: datetime) -> PreparedEvent:
    """PostUnliked on `likes`, keyed by post id."""
    request_id = _request_id(req.request_id)
    post_id = ids.require_entity_id(req.post_id)
    event = _envelope(actor, now, event_id_for("unlike", actor, request_id, post_id))
    event.post_unliked.post_id = post_id
    return PreparedEvent(topics.LIKES, post_id, event, post_id)


def add_comment(
    actor: str, req: cmd.AddCommentRequest, now: datetime, limits: Limits
) -> PreparedEvent:
    """CommentAdded on `comments`, keyed by post id; comment id derived from request_id."""
    request_id = _request_id(req.request_id)
    post_id = ids.require_entity_id(req.post_id)
    text = _text(req.text, "text", limits.max_comment_chars, required=True)
    comment_id = ids.derive_id(f"comment:{post_id}", actor, request_id)
    event = _envelope(actor, now, event_id_for("comment", actor, request_id, comment_id))
    event.comment_added.CopyFrom(ev.CommentAdded(post_id=post_id, comment_id=comment_id, text=text))
    return PreparedEvent(topics.COMMENTS, post_id, event, post_id, comment_id)


def delete_comment(actor: str, req: cmd.DeleteCommentRequest, now: datetime) -> PreparedEvent:
    """CommentDeleted on `comments`, keyed by post id."""
    request_id = _request_id(req.request_id)
    post_id = ids.require_entity_id(req.post_id)
    comment_id = ids.require_entity_id(req.comment_id, "comment_id")
    event = _envelope(actor, now, event_id_for("uncomment", actor, request_id, comment_id))
    event.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=post_id, comment_id=comment_id))
    return PreparedEvent(topics.COMMENTS, post_id, event, post_id, comment_id)
