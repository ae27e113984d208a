"""Unit tests of the pure command rules (no broker, no server)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from command_service import commands
from command_service.commands import Limits
from mysocial import ids
from mysocial.auth import actor_from_metadata, mint_token, verify_token
from mysocial.config import ConfigError, Settings, documented_settings
from mysocial.consistency import ConsistencyToken
from mysocial.errors import InvalidArgument, Unauthenticated
from mysocial.kafka.topics import topic_specs
from mysocial.v1 import command_service_pb2 as cmd

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LIMITS = Limits(max_caption_chars=10, max_comment_chars=5)
POST = str(uuid.uuid4())


def test_create_post_is_keyed_by_author_and_derives_ids_from_request_id() -> None:
    a = commands.create_post(
        "alice", cmd.CreatePostRequest(caption="hi", request_id="r"), NOW, LIMITS
    )
    b = commands.create_post(
        "alice", cmd.CreatePostRequest(caption="hi", request_id="r"), NOW, LIMITS
    )
    c = commands.create_post(
        "bob", cmd.CreatePostRequest(caption="hi", request_id="r"), NOW, LIMITS
    )
    assert a.topic == "posts" and a.key == "alice"
    assert a.post_id == b.post_id != c.post_id
    assert a.event.event_id == b.event.event_id
    assert a.event.occurred_at.ToDatetime(UTC) == NOW
    assert a.event_type == "PostCreated"
    assert ids.is_entity_id(a.post_id)


def test_without_request_id_every_command_gets_fresh_ids() -> None:
    a = commands.create_post("alice", cmd.CreatePostRequest(caption="hi"), NOW, LIMITS)
    b = commands.create_post("alice", cmd.CreatePostRequest(caption="hi"), NOW, LIMITS)
    assert a.post_id != b.post_id and a.event.event_id != b.event.event_id


def test_engagement_events_are_keyed_by_post() -> None:
    like = commands.like_post("bob", cmd.LikePostRequest(post_id=POST), NOW)
    unlike = commands.unlike_post("bob", cmd.UnlikePostRequest(post_id=POST), NOW)
    com = commands.add_comment("bob", cmd.AddCommentRequest(post_id=POST, text="yo"), NOW, LIMITS)
    dcom = commands.delete_comment(
        "bob", cmd.DeleteCommentRequest(post_id=POST, comment_id=com.comment_id), NOW
    )
    dpost = commands.delete_post("alice", cmd.DeletePostRequest(post_id=POST), NOW)
    assert [(p.topic, p.key) for p in (like, unlike, com, dcom)] == [
        ("likes", POST),
        ("likes", POST),
        ("comments", POST),
        ("comments", POST),
    ]
    assert (dpost.topic, dpost.key) == ("posts", "alice")
    assert [p.event_type for p in (like, unlike, com, dcom, dpost)] == [
        "PostLiked",
        "PostUnliked",
        "CommentAdded",
        "CommentDeleted",
        "PostDeleted",
    ]


def test_comment_ids_differ_per_post_for_the_same_request_id() -> None:
    other = str(uuid.uuid4())
    a = commands.add_comment(
        "bob", cmd.AddCommentRequest(post_id=POST, text="x", request_id="k"), NOW, LIMITS
    )
    b = commands.add_comment(
        "bob", cmd.AddCommentRequest(post_id=other, text="x", request_id="k"), NOW, LIMITS
    )
    c = commands.add_comment(
        "bob", cmd.AddCommentRequest(post_id=POST, text="x", request_id="k"), NOW, LIMITS
    )
    assert a.comment_id == c.comment_id != b.comment_id


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda: commands.create_post("a", cmd.CreatePostRequest(caption="x" * 11), NOW, LIMITS),
            "caption",
        ),
        (
            lambda: commands.create_post("a", cmd.CreatePostRequest(caption="ok\x00"), NOW, LIMITS),
            "caption",
        ),
        (
            lambda: commands.add_comment(
                "a", cmd.AddCommentRequest(post_id=POST, text=""), NOW, LIMITS
            ),
            "text",
        ),
        (
            lambda: commands.add_comment(
                "a", cmd.AddCommentRequest(post_id=POST, text="123456"), NOW, LIMITS
            ),
            "text",
        ),
        (
            lambda: commands.like_post("a", cmd.LikePostRequest(post_id=POST.upper()), NOW),
            "post_id",
        ),
        (
            lambda: commands.like_post(
                "a", cmd.LikePostRequest(post_id=POST, request_id="\n"), NOW
            ),
            "request_id",
        ),
        (
            lambda: commands.delete_comment("a", cmd.DeleteCommentRequest(post_id=POST), NOW),
            "comment_id",
        ),
        (
            lambda: commands.create_post(
                "a", cmd.CreatePostRequest(media_ids=["b" * 64, "b" * 64]), NOW, LIMITS
            ),
            "media_ids[1]",
        ),
    ],
)
def test_validation_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field


def test_caption_length_counts_characters_not_bytes() -> None:
    commands.create_post("a", cmd.CreatePostRequest(caption="é" * 10), NOW, LIMITS)
    commands.create_post("a", cmd.CreatePostRequest(caption="line\nbreak"), NOW, LIMITS)


def test_tokens_round_trip_and_reject_garbage() -> None:
    secret = "x" * 32
    token = mint_token("alice", secret, 60)
    assert verify_token(token, secret) == "alice"
    assert actor_from_metadata([("authorization", f"Bearer {token}")], secret) == "alice"
    with pytest.raises(Unauthenticated, match="expired"):
        verify_token(mint_token("alice", secret, 60, now=time.time() - 120), secret)
    with pytest.raises(Unauthenticated, match="signature"):
        verify_token(token, "y" * 32)
    with pytest.raises(Unauthenticated, match="missing"):
        actor_from_metadata([], secret)
    with pytest.raises(ValueError):
        mint_token("bad user!", secret)


def test_consistency_token_round_trip() -> None:
    t = ConsistencyToken("likes", 3, 42, POST)
    assert ConsistencyToken.decode(t.encode()) == t
    for junk in ("", "abc", "!!!", t.encode()[:-3]):
        with pytest.raises(InvalidArgument):
            ConsistencyToken.decode(junk)


def test_ids() -> None:
    assert (
        ids.is_user_id("alice_1.x@y-z")
        and not ids.is_user_id("-x")
        and not ids.is_user_id("a" * 65)
    )
    assert ids.is_media_id("0" * 64) and not ids.is_media_id("0" * 63)
    assert ids.derive_id("post", "a", "r") == ids.derive_id("post", "a", "r")


def test_settings_from_env_and_validation() -> None:
    s = Settings.from_env({"MYSOCIAL_POSTS_PARTITIONS": "40", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert s.posts_partitions == 40 and s.bootstrap == "k:9092" and not s.embedded_broker
    assert Settings.from_env({}).bootstrap == "127.0.0.1:9092"
    with pytest.raises(ConfigError, match="MYSOCIAL_POSTS_PARTITIONS"):
        Settings.from_env({"MYSOCIAL_POSTS_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="MYSOCIAL_COMMAND_ADDR"):
        Settings.from_env({"MYSOCIAL_COMMAND_ADDR": "nohost"})
    # A renamed setting still reads its old name; the new name wins when both are set.
    assert Settings.from_env({"MYSOCIAL_LIKES_PARTITIONS": "12"}).copartitions == 12
    both = {"MYSOCIAL_LIKES_PARTITIONS": "12", "MYSOCIAL_COPARTITIONS": "24"}
    assert Settings.from_env(both).copartitions == 24
    with pytest.raises(ConfigError, match="MYSOCIAL_LIKES_PARTITIONS"):
        Settings.from_env({"MYSOCIAL_LIKES_PARTITIONS": "x"})
    assert {d.env for d in documented_settings()} >= {
        "KAFKA_BOOTSTRAP_SERVERS",
        "MYSOCIAL_COMMAND_ADDR",
        "MYSOCIAL_QUERY_ADDR",
        "MYSOCIAL_JWT_SECRET",
    }


def test_topic_layout_matches_the_design() -> None:
    specs = {s.name: s for s in topic_specs(Settings())}
    assert specs["posts"].partitions == 32 and specs["posts"].config["retention.ms"] == "-1"
    assert specs["likes"].partitions == specs["comments"].partitions == 48
    assert specs["posts_with_counts"].partitions == 48
    assert specs["posts_with_counts"].cleanup_policy == "compact"
    assert (
        specs["trending_posts"].partitions == 1
        and specs["trending_posts"].cleanup_policy == "compact"
    )
    assert specs["post_comments"].partitions == 48
    assert specs["post_comments"].cleanup_policy == "compact"
    assert specs["likes"].config["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert specs["likes"].config["segment.ms"] == str(24 * 3600 * 1000)  # retention acts daily
    public = {"posts", "likes", "comments", "posts_with_counts", "post_comments", "trending_posts"}
    assert all(n.startswith("mysocial.") for n in specs if n not in public)


def test_settings_doc_documents_every_setting() -> None:
    from mysocial.config import settings_markdown
    from mysocial.settings_doc import SETTINGS_BEGIN, SETTINGS_DOC, SETTINGS_END

    table = f"{SETTINGS_BEGIN}\n{settings_markdown()}\n{SETTINGS_END}"
    assert table in SETTINGS_DOC.read_text(), (
        "docs/SETTINGS.md settings table is stale: run `python -m mysocial.config`"
    )


def test_token_cache_still_enforces_expiry() -> None:
    from mysocial.auth import TokenCache

    cache = TokenCache(size=2)
    secret = "s" * 32
    token = mint_token("alice", secret, 60)
    assert cache.verify(token, secret) == "alice"
    assert cache.verify(token, secret) == "alice"  # served from the cache
    cache.entries[(token, secret)] = ("alice", time.time() - 1)  # time passes
    with pytest.raises(Unauthenticated, match="expired"):
        cache.verify(token, secret)
    with pytest.raises(Unauthenticated):
        cache.verify(token, "other" * 8)  # a different secret is not a hit
    for user in ("a1", "a2", "a3"):
        cache.verify(mint_token(user, secret, 60), secret)
    assert len(cache.entries) <= 2


def test_fast_user_id_check_agrees_with_the_pattern() -> None:
    """is_user_id (str.strip over the allowed set) accepts exactly what the rule's
    pattern accepts, within the length limit."""
    import random

    alphabet = "aZ09_.@-é \t\n/+ßİ\u0130\u212a\x00"  # includes non-ASCII look-alikes
    rng = random.Random(7)
    samples = ["", "a", "-", "_a", "a-", "a b", "K", "\u212a", "a\n"]
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(5000)
    ]
    samples += ["a" * 64, "a" * 65]
    for value in samples:
        expected = 0 < len(value) <= ids.USER_ID_MAX and ids._USER_ID.fullmatch(value) is not None
        assert ids.is_user_id(value) == expected, repr(value)
