"""Unit tests of the trending score (pure functions and per-partition state)."""

from __future__ import annotations

import math
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.events import event_time_ms
from mysocial.internal.v1 import state_pb2 as st
from mysocial.v1 import events_pb2 as ev
from processor import trending
from processor.ranking import build_ranking, candidate_of, materially_different, signature_of
from processor.trending import TrendingConfig
from tests.support.rules import T0, Harness

HOUR = 3600_000


def score(h: Harness, post: str, at: int) -> float:
    rec = h.state.post(post)
    assert rec is not None
    return trending.score_at(h.state.config, trending.rank_key(h.state.config, rec.trending), at)


def new_post(h: Harness, author: str = "author") -> str:
    post = str(uuid.uuid4())
    h.create(post, author, T0)
    return post


def test_score_halves_every_half_life() -> None:
    h = Harness()
    p = new_post(h)
    h.like(p, "u1", T0)
    assert math.isclose(score(h, p, T0), 1.0)
    assert math.isclose(score(h, p, T0 + HOUR), 0.5)
    assert math.isclose(score(h, p, T0 + 3 * HOUR), 0.125)


def test_comments_weigh_more_than_likes_and_each_user_counts_once() -> None:
    h = Harness()
    p = new_post(h)
    h.like(p, "liker", T0)
    h.like(p, "liker", T0)  # repeat: still one like
    h.comment(p, "talker", str(uuid.uuid4()), T0)
    h.comment(p, "talker", str(uuid.uuid4()), T0)  # second comment: same user, counted once
    h.like(p, "both", T0)
    h.comment(p, "both", str(uuid.uuid4()), T0)  # likes and comments: counted once, as commenter
    assert math.isclose(score(h, p, T0), 1.0 + 3.0 + 3.0)
    rec = h.state.post(p)
    assert rec is not None
    assert (rec.trending.counted_likers, rec.trending.counted_commenters) == (1, 2)


def test_self_engagement_does_not_count() -> None:
    h = Harness()
    p = new_post(h, "author")
    h.like(p, "author", T0)
    h.comment(p, "author", str(uuid.uuid4()), T0)
    assert score(h, p, T0) == 0.0
    rec = h.state.post(p)
    assert rec is not None and rec.trending.ignored_events >= 2
    assert rec.post.like_count == 1  # but the like itself is a like (invariant 1)


def test_retractions_remove_exactly_what_was_added() -> None:
    h = Harness()
    p = new_post(h)
    cid = str(uuid.uuid4())
    h.like(p, "u1", T0)
    h.comment(p, "u1", cid, T0 + 1000)
    assert math.isclose(score(h, p, T0), 3.0)
    h.uncomment(p, "u1", cid, T0 + 2000)
    assert math.isclose(score(h, p, T0), 1.0)  # back to a like
    h.like(p, "u1", T0 + 3000, unlike=True)
    assert score(h, p, T0) == 0.0


def test_like_unlike_cycles_cannot_refresh_a_score() -> None:
    h = Harness()
    p = new_post(h)
    h.like(p, "u1", T0)
    for i in range(1, 6):
        h.like(p, "u1", T0 + i * HOUR, unlike=True)
        h.like(p, "u1", T0 + i * HOUR + 1)
    # Still dated at the first like: worth 2^-5 five hours later, not 1.
    assert math.isclose(score(h, p, T0 + 5 * HOUR), 2**-5, rel_tol=1e-9)


def test_earliest_engagement_wins_whatever_the_reading_order() -> None:
    early, late = Harness(), Harness()
    pe, pl = new_post(early), new_post(late)
    cid = str(uuid.uuid4())
    early.comment(pe, "u1", cid, T0 + 1000)
    early.like(pe, "u1", T0 + 5000)
    late.like(pl, "u1", T0 + 5000)  # the like was read first...
    late.comment(pl, "u1", cid, T0 + 1000)  # ...but the comment happened first
    assert math.isclose(score(early, pe, T0 + HOUR), score(late, pl, T0 + HOUR), rel_tol=1e-12)


def test_future_event_times_are_clamped_to_acceptance() -> None:
    ts = Timestamp()
    ts.FromMilliseconds(T0 + 10 * HOUR)  # a client clock (or forger) from the future
    event = ev.Event(occurred_at=ts)
    assert event_time_ms(event, accepted_ms=T0) == T0
    ts.FromMilliseconds(T0 - 5000)
    assert event_time_ms(ev.Event(occurred_at=ts), accepted_ms=T0) == T0 - 5000


def test_eligibility_needs_distinct_users_and_recent_engagement() -> None:
    cfg = TrendingConfig(min_distinct_users=3, horizon_s=2 * 3600)
    h = Harness()
    h.state.config = cfg
    p = new_post(h)
    h.like(p, "u1", T0)
    h.like(p, "u2", T0)
    rec = h.state.post(p)
    assert rec is not None
    assert not trending.eligible(cfg, rec.trending, T0)
    h.like(p, "u3", T0)
    assert trending.eligible(cfg, rec.trending, T0)
    assert not trending.eligible(cfg, rec.trending, T0 + 3 * HOUR)  # past the horizon


def test_rebase_keeps_scores_for_very_old_epochs() -> None:
    h = Harness()
    p = new_post(h)
    far = T0 + 600 * HOUR  # far enough that 2^(t - epoch) would overflow without a rebase
    for i in range(3):
        h.like(p, f"u{i}", far)
    assert math.isclose(score(h, p, far), 3.0, rel_tol=1e-9)


def _candidate(post_id: str, users: int, at: int, cfg: TrendingConfig) -> st.Candidate:
    rec = st.PostRecord(status=st.POST_STATUS_LIVE)
    rec.post.post_id = post_id
    rec.post.like_count = users
    rec.trending.epoch_ms = at
    for _ in range(users):
        trending.change_role(cfg, rec.trending, trending.Role.NONE, trending.Role.LIKER, at)
    return candidate_of(cfg, rec)


def test_global_ranking_orders_and_limits() -> None:
    cfg = TrendingConfig(min_distinct_users=3, top_k=2)
    cands = [
        _candidate("a", 5, T0, cfg),
        _candidate("b", 50, T0 - 5 * HOUR, cfg),  # more users, but long ago
        _candidate("c", 10, T0, cfg),
        _candidate("d", 2, T0, cfg),  # too few users
    ]
    ranking = build_ranking(cfg, cands, T0, cfg.top_k)
    assert [e.post_id for e in ranking.entries] == ["c", "a"]
    assert [e.rank for e in ranking.entries] == [1, 2]
    assert math.isclose(ranking.entries[0].score, 10.0)
    assert ranking.entries[0].breakdown.counted_likers == 10


def test_republish_only_on_new_inputs_or_noticeable_decay() -> None:
    cfg = TrendingConfig(min_distinct_users=1)
    cands = [_candidate("a", 5, T0, cfg)]
    first = build_ranking(cfg, cands, T0, 10)
    sig = signature_of(cands)
    later = build_ranking(cfg, cands, T0 + 1000, 10)  # 1 s of decay: 0.02 %
    assert not materially_different(first, sig, later, sig, 0.01)
    much_later = build_ranking(cfg, cands, T0 + 60_000, 10)  # 1 minute: 1.1 %
    assert materially_different(first, sig, much_later, sig, 0.01)
    changed = [_candidate("a", 6, T0, cfg)]
    assert materially_different(
        first, sig, build_ranking(cfg, changed, T0, 10), signature_of(changed), 0.01
    )


def test_equal_weights_still_tell_likers_from_commenters() -> None:
    """With like_weight == comment_weight a contribution's weight cannot say which
    mass and count it is in: the role does (it once counted every liker a commenter)."""
    cfg = TrendingConfig(like_weight=2.0, comment_weight=2.0, min_distinct_users=1)
    h = Harness()
    h.state.config = cfg
    p = new_post(h)
    gone = str(uuid.uuid4())
    h.like(p, "liker", T0)
    h.like(p, "both", T0)
    h.comment(p, "both", str(uuid.uuid4()), T0)  # a liker who comments: a commenter
    h.comment(p, "talker", str(uuid.uuid4()), T0)
    h.like(p, "was-talker", T0)
    h.comment(p, "was-talker", gone, T0)
    h.uncomment(p, "was-talker", gone, T0 + 1000)  # back to a liker
    rec = h.state.post(p)
    assert rec is not None
    entry = build_ranking(cfg, [candidate_of(cfg, rec)], T0, 10).entries[0]
    b = entry.breakdown
    assert (b.counted_likers, b.counted_commenters) == (2, 2)
    assert math.isclose(b.like_points, 4.0) and math.isclose(b.comment_points, 4.0)
    assert math.isclose(entry.score, 8.0)
