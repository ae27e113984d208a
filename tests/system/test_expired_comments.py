"""Comments outlive the raw events: with `likes` and `comments` kept 2 seconds, the
comment events really expire (the partitions' first offsets move past them), every
service restarts, and still every comment is listed in order, its author and the
post's author can delete it, a stranger cannot, the counts are unchanged and the
audit agrees (saying which inputs it could not recompute)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.reader import expired_starts
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from mysocial.v1 import resources_pb2 as res
from processor.audit import audit, settle
from tests.support.helpers import auth, make_settings, wait_until
from tests.support.services import System

RETENTION_MS = 2000
POSTS = 6
COMMENTS_PER_POST = 5


@pytest.fixture
def quick_retention_broker(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """A broker of its own that enforces retention every half second (a stock broker
    looks every 5 minutes)."""
    cluster = EmbeddedCluster.on_free_ports(
        1, tmp_path / "kafka", node_overrides={1: {"log.retention.check.interval.ms": "500"}}
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _list(queries: q_grpc.QueryServiceStub, post_id: str, token: str = "") -> list[res.Comment]:
    out: list[res.Comment] = []
    page = ""
    while True:
        resp = queries.ListComments(
            q.ListCommentsRequest(
                post_id=post_id, page_size=3, page_token=page, consistency_token=token
            ),
            timeout=15,
        )
        out.extend(resp.comments)
        if not resp.next_page_token:
            return out
        page = resp.next_page_token


def _counts(queries: q_grpc.QueryServiceStub, post_id: str, token: str = "") -> tuple[int, int]:
    post = queries.GetPost(
        q.GetPostRequest(post_id=post_id, consistency_token=token), timeout=15
    ).post
    return post.like_count, post.comment_count


def _partitions_of(settings: Settings, post_ids: list[str]) -> set[int]:
    return {partition_for(p.encode(), settings.copartitions) for p in post_ids}


def test_comments_are_listed_and_deletable_after_their_events_expired(
    quick_retention_broker: EmbeddedCluster, tmp_path: Path
) -> None:
    settings = make_settings(
        quick_retention_broker.bootstrap,
        processor_state_dir=str(tmp_path / "state"),
        engagement_retention_ms=RETENTION_MS,
        processor_commit_interval_ms=100,
    )
    provision(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    with System(settings, logs) as system:
        commands, queries = system.commands(), system.queries()
        posts: list[str] = []
        written: dict[str, list[tuple[str, str, str]]] = {}  # post -> (id, author, text)
        tokens: dict[str, tuple[str, str]] = {}  # post -> tokens of its last comment, like
        for i in range(POSTS):
            author = f"author{i}"
            created = commands.CreatePost(
                cmd.CreatePostRequest(caption=f"post {i}"), metadata=auth(author), timeout=15
            )
            posts.append(created.post_id)
            written[created.post_id] = []
        for round_ in range(COMMENTS_PER_POST):
            for i, post_id in enumerate(posts):
                user = f"user{(i + round_) % 4}"
                text = f"round {round_} on {i}: ünïcode ok"
                added = commands.AddComment(
                    cmd.AddCommentRequest(post_id=post_id, text=text),
                    metadata=auth(user),
                    timeout=15,
                )
                written[post_id].append((added.comment_id, user, text))
                liked = commands.LikePost(
                    cmd.LikePostRequest(post_id=post_id), metadata=auth(user), timeout=15
                )
                tokens[post_id] = (added.consistency_token, liked.consistency_token)
        # A token covers its own topic partition only: each post waits for its last comment
        # and its last like before its counts are taken.
        for post_id, (comment_token, _) in tokens.items():
            _counts(queries, post_id, comment_token)
        before = {p: _counts(queries, p, tokens[p][1]) for p in posts}
        assert all(c == COMMENTS_PER_POST for _, c in before.values())

        # Retention deletes only closed segments: after the retention time, one more
        # event per partition rolls the segment that holds the first ones.
        comment_ends = {p: written[p][-1] for p in posts}
        partitions = _partitions_of(settings, posts)
        time.sleep(RETENTION_MS / 1000 + 0.5)  # the events must be older than retention
        for i, post_id in enumerate(posts):
            commands.LikePost(
                cmd.LikePostRequest(post_id=post_id), metadata=auth("roller"), timeout=15
            )
            commands.UnlikePost(
                cmd.UnlikePostRequest(post_id=post_id), metadata=auth("roller"), timeout=15
            )
            commands.DeleteComment(  # a comment event too: it rolls comments' segments
                cmd.DeleteCommentRequest(post_id=post_id, comment_id=comment_ends[post_id][0]),
                metadata=auth(f"author{i}"),
                timeout=15,
            )
            written[post_id].pop()
        wait_until(
            lambda: (
                partitions <= set(expired_starts(settings, settings.topic(topics.COMMENTS)))
                and partitions <= set(expired_starts(settings, settings.topic(topics.LIKES)))
            ),
            timeout=60,
            what="the first comment and like events of every post's partition expired",
        )

        system.query.stop()
        system.command.stop()
        assert system.processor.terminate() == 0
        system.processor.start()
        system.command.start()
        system.query.start()

        for post_id in posts:
            want = [(cid, author, text) for cid, author, text in reversed(written[post_id])]
            got = _list(queries, post_id)
            assert [(c.comment_id, c.author_id, c.text) for c in got] == want
            assert _counts(queries, post_id) == (before[post_id][0], len(want))

        # Its author, then the post's author, may delete an expired comment; no one else.
        victim = posts[0]
        own_id, own_author, _ = written[victim][0]
        other_id, _, _ = written[victim][1]
        with pytest.raises(grpc.RpcError) as denied:
            commands.DeleteComment(
                cmd.DeleteCommentRequest(post_id=victim, comment_id=other_id),
                metadata=auth("stranger"),
                timeout=15,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        commands.DeleteComment(
            cmd.DeleteCommentRequest(post_id=victim, comment_id=own_id),
            metadata=auth(own_author),
            timeout=15,
        )
        token = commands.DeleteComment(
            cmd.DeleteCommentRequest(post_id=victim, comment_id=other_id),
            metadata=auth("author0"),
            timeout=15,
        ).consistency_token
        left = [c.comment_id for c in _list(queries, victim, token)]
        assert own_id not in left and other_id not in left
        assert len(left) == COMMENTS_PER_POST - 3
        assert _counts(queries, victim, token)[1] == COMMENTS_PER_POST - 3

        assert settle(settings, 60)
        report = audit(settings)
        assert report.ok, report.mismatches[:10] + report.trending_mismatches[:10]
        assert any(line.startswith("comments partitions") for line in report.unrecomputable)
        assert report.comments_checked == sum(len(w) for w in written.values()) - 2
