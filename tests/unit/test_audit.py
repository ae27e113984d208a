"""The audit's judgement (no Kafka) of a published trending ranking (the truth is
recomputed from records, the ranking built by the processor's rules from the same
events, and a wrong breakdown must be reported even when every score is right), of
post_comments, and of posts whose inputs expired."""

from __future__ import annotations

import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.kafka.reader import Record
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor import truth as truth_mod
from processor.audit import ranking_mismatches
from processor.audit_comments import CrossCheck, Expired, changelog_views, comment_mismatches
from processor.ranking import build_ranking, candidate_of
from processor.rules import DictStore, TaskState
from processor.trending import TrendingConfig

T0 = 1_800_000_000_000
POST = str(uuid.UUID(int=5, version=4))
# Equal weights: a liker and a commenter add the same points, so only the breakdown
# shows whether they were told apart.
EQUAL = TrendingConfig(half_life_s=60, like_weight=2.0, comment_weight=2.0, min_distinct_users=1)


def _event(actor: str, t: int) -> ev.Event:
    ts = Timestamp()
    ts.FromMilliseconds(t)
    return ev.Event(event_id=uuid.uuid4().hex, actor_user_id=actor, occurred_at=ts)


def _script() -> list[tuple[str, ev.Event, int]]:
    """(contract topic, event, time): a liker, a liker who comments, a commenter."""
    created = _event("author", T0)
    created.post_created.post_id = POST
    out = [(topics.POSTS, created, T0)]
    for i, user in enumerate(("liker", "both")):
        e = _event(user, T0 + 1000 * i)
        e.post_liked.post_id = POST
        out.append((topics.LIKES, e, T0 + 1000 * i))
    for i, user in enumerate(("both", "talker")):
        e = _event(user, T0 + 5000 + 1000 * i)
        e.comment_added.CopyFrom(ev.CommentAdded(post_id=POST, comment_id=str(uuid.uuid4())))
        out.append((topics.COMMENTS, e, T0 + 5000 + 1000 * i))
    return out


def _truth_and_ranking(at_ms: int) -> tuple[truth_mod.Truth, res.TrendingRanking]:
    script = _script()
    records: dict[str, list[Record]] = {topics.POSTS: [], topics.LIKES: [], topics.COMMENTS: []}
    state = TaskState(DictStore(), EQUAL)
    for source, event, t in script:
        offset = len(records[source])
        value = event.SerializeToString()
        key = (event.actor_user_id if source == topics.POSTS else POST).encode()
        records[source].append(Record(source, 0, offset, key, value, {}, t))
        state.apply(topics.POSTS_BY_ID if source == topics.POSTS else source, offset, event, t)
    truth = truth_mod.compute(
        records[topics.POSTS], records[topics.LIKES], records[topics.COMMENTS], 1, 1
    )
    rec = state.post(POST)
    assert rec is not None
    return truth, build_ranking(EQUAL, [candidate_of(EQUAL, rec)], at_ms, EQUAL.top_k)


def test_a_ranking_built_by_the_rules_agrees_with_the_truth() -> None:
    truth, ranking = _truth_and_ranking(T0 + 30_000)
    assert [e.post_id for e in ranking.entries] == [POST]
    b = ranking.entries[0].breakdown
    assert (b.counted_likers, b.counted_commenters) == (1, 2)
    assert ranking_mismatches(EQUAL, truth, ranking) == []


def test_a_breakdown_that_counts_likers_as_commenters_is_reported() -> None:
    """What the processor published when it told the roles apart by weight: the same
    score, every user a commenter."""
    truth, ranking = _truth_and_ranking(T0 + 30_000)
    b = ranking.entries[0].breakdown
    b.comment_points += b.like_points
    b.like_points = 0.0
    b.counted_commenters += b.counted_likers
    b.counted_likers = 0
    found = ranking_mismatches(EQUAL, truth, ranking)
    assert not [m for m in found if "score" in m]  # the scores alone look right
    assert any("likers/commenters 0/3, expected 1/2" in m for m in found), found
    assert any("like points 0," in m for m in found), found
    assert any("comment points" in m for m in found), found


def test_breakdown_points_are_compared_within_the_score_tolerance() -> None:
    truth, ranking = _truth_and_ranking(T0 + 30_000)
    b = ranking.entries[0].breakdown
    b.like_points *= 1 + 1e-9  # rounding: fine
    assert ranking_mismatches(EQUAL, truth, ranking) == []
    b.like_points *= 1.001  # a different number
    assert [m for m in ranking_mismatches(EQUAL, truth, ranking) if "like points" in m]


def _comment(post: str, cid: str, author: str, text: str, t: int) -> res.Comment:
    c = res.Comment(comment_id=cid, post_id=post, author_id=author, text=text)
    c.created_at.FromMilliseconds(t)
    return c


def test_post_comments_are_checked_against_the_events() -> None:
    post = truth_mod.TruePost(POST, "author", "c", T0)
    live, gone, other = (str(uuid.uuid4()) for _ in range(3))
    post.comments = {live: ("u1", T0 + 1, False), gone: ("u2", T0 + 2, True)}
    post.texts = {live: "hello"}
    right = {live: _comment(POST, live, "u1", "hello", T0 + 1)}
    assert comment_mismatches(post, right, recomputable=True) == []
    wrong = {
        live: _comment(POST, live, "u1", "hullo", T0 + 1),
        gone: _comment(POST, gone, "u2", "", T0 + 2),
        other: _comment(POST, other, "u3", "x", T0 + 3),
    }
    found = comment_mismatches(post, wrong, recomputable=True)
    assert len(found) == 3 and any("differs" in m for m in found)
    assert any(f"deleted comment {gone}" in m for m in found)
    assert any(f"unknown comment {other}" in m for m in found)
    assert comment_mismatches(post, {}, recomputable=True) == [
        f"{POST}: comment {live} missing from post_comments"
    ]
    assert comment_mismatches(post, wrong, recomputable=False) == []  # inputs expired


def test_expired_posts_are_checked_against_the_changelog_and_post_comments() -> None:
    cid = str(uuid.uuid4())
    record = st.PostRecord(post=res.Post(post_id=POST, like_count=2, comment_count=1))
    changelog = {
        b"P" + POST.encode(): record.SerializeToString(),
        b"C" + POST.encode() + cid.encode(): st.CommentRecord(author_id="u").SerializeToString(),
    }
    listed = {POST: {cid: _comment(POST, cid, "u", "t", T0)}}
    expired = Expired(likes={0: 10}, comments={0: 4})
    assert len(expired.describe()) == 2
    cross = CrossCheck(expired, 1, *changelog_views(changelog), listed)
    assert cross.likes_expired(POST) and cross.comments_expired(POST)
    got = ev.PostWithCounts(post=res.Post(post_id=POST, like_count=2, comment_count=1))
    assert cross.mismatches(POST, got) == []
    got.post.like_count = 3
    got.post.comment_count = 2
    found = cross.mismatches(POST, got)
    assert any("changelog says 2/1" in m for m in found)
    assert any("post_comments lists 1" in m for m in found)
