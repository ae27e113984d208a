"""The ranking functions of trending (pure): candidates, top-K, scores at a time.

Both trending stages (processor/projections/trending_posts.py) and the tests use
them; nothing here touches Kafka or a task.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.internal.v1 import state_pb2 as st
from mysocial.v1 import resources_pb2 as res
from processor import trending
from processor.rules import LIVE
from processor.trending import TrendingConfig

SCOPE = "global"


def candidate_of(cfg: TrendingConfig, rec: st.PostRecord) -> st.Candidate:
    return st.Candidate(
        post_id=rec.post.post_id,
        author_id=rec.post.author_id,
        rank_key=trending.rank_key(cfg, rec.trending),
        like_count=rec.post.like_count,
        comment_count=rec.post.comment_count,
        trending=rec.trending,
    )


def qualifies(cfg: TrendingConfig, rec: st.PostRecord, now_ms: int) -> bool:
    return rec.status == LIVE and trending.eligible(cfg, rec.trending, now_ms)


def select_top(
    cfg: TrendingConfig, candidates: Iterable[st.Candidate], now_ms: int, limit: int
) -> list[st.Candidate]:
    """The best `limit` eligible candidates, by rank key then post id (pure)."""
    live = [
        c
        for c in candidates
        if trending.eligible(cfg, c.trending, now_ms) and c.rank_key != -math.inf
    ]
    return heapq.nsmallest(limit, live, key=lambda c: (-c.rank_key, c.post_id))


def build_ranking(
    cfg: TrendingConfig, candidates: Iterable[st.Candidate], now_ms: int, limit: int
) -> res.TrendingRanking:
    """The global ranking at now_ms from candidates of every partition (pure)."""
    return ranking_of(cfg, select_top(cfg, candidates, now_ms, limit), now_ms)


Signature = list[tuple[str, float, int, int, int]]


def signature_of(top: list[st.Candidate]) -> Signature:
    """What a ranking was computed from: any change means new information."""
    return [
        (c.post_id, c.rank_key, c.like_count, c.comment_count, c.trending.ignored_events)
        for c in top
    ]


def ranking_of(cfg: TrendingConfig, top: list[st.Candidate], now_ms: int) -> res.TrendingRanking:
    """The ranking entries of `top`, with scores evaluated at now_ms."""
    computed = Timestamp()
    computed.FromMilliseconds(now_ms)
    ranking = res.TrendingRanking(scope=SCOPE, computed_at=computed)
    for i, c in enumerate(top, start=1):
        decay = math.pow(2.0, (c.trending.epoch_ms - now_ms) / cfg.half_life_ms)
        last = Timestamp()
        last.FromMilliseconds(c.trending.last_engagement_ms)
        ranking.entries.append(
            res.TrendingEntry(
                post_id=c.post_id,
                score=trending.score_at(cfg, c.rank_key, now_ms),
                rank=i,
                like_count=c.like_count,
                comment_count=c.comment_count,
                author_id=c.author_id,
                breakdown=res.ScoreBreakdown(
                    counted_likers=c.trending.counted_likers,
                    counted_commenters=c.trending.counted_commenters,
                    like_points=c.trending.like_mass * decay,
                    comment_points=c.trending.comment_mass * decay,
                    ignored_events=c.trending.ignored_events,
                    last_engagement_at=last,
                ),
            )
        )
    return ranking


def materially_different(
    old: res.TrendingRanking | None,
    old_signature: Signature | None,
    new: res.TrendingRanking,
    new_signature: Signature,
    tolerance: float,
) -> bool:
    """Publish on any new input (order, membership, counts, scores' inputs), or when
    time alone moved a score by more than `tolerance` (decay)."""
    if old is None or old_signature != new_signature:
        return True
    for a, b in zip(old.entries, new.entries, strict=True):
        if abs(a.score - b.score) > tolerance * max(abs(a.score), 1e-12):
            return True
    return False
