"""Trending in two stages, both inside the processor's transactions.

1. Local: each task keeps its eligible posts by the time-invariant rank key
   (processor/trending.py) and, when its top-K changes, writes the list to the
   compacted `mysocial.trending-candidates` topic (key = partition).
2. Global merge: the instance that owns that topic's single partition keeps the
   latest list of every partition, merges them into one ranking evaluated at "now",
   and writes it to `trending_posts` (key "global") when it changed: on new
   candidates and on a timer, since scores decay and posts leave the horizon.

The merge state is restored from the candidates topic up to the committed offset,
so it always matches the offsets the stage resumes from.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.config import Settings
from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.kafka.reader import watermarks
from mysocial.log import get_logger
from mysocial.v1 import resources_pb2 as res
from processor import trending
from processor.rules import LIVE
from processor.trending import TrendingConfig

if TYPE_CHECKING:
    from processor.engine import Task

log = get_logger("processor.ranking")

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


@dataclass
class LocalTop:
    """One task's eligible posts and the top-K it last published."""

    active: dict[str, st.Candidate] = field(default_factory=dict)
    top: list[str] = field(default_factory=list)
    kth_key: float = -math.inf
    dirty: bool = False
    removal: bool = False


class Ranking:
    """Both trending stages of one processor instance."""

    def __init__(self, settings: Settings, cfg: TrendingConfig) -> None:
        self.cfg = cfg
        self.topic_candidates = settings.topic(topics.TRENDING_CANDIDATES)
        self.topic_trending = settings.topic(topics.TRENDING_POSTS)
        self.local: dict[int, LocalTop] = {}
        # Merge stage (only while this instance owns the candidates partition).
        self.merging = False
        self.lists: dict[int, st.CandidateList] = {}
        self.uncommitted: dict[int, st.CandidateList] = {}
        self.merge_dirty = False
        # Local lists are written at most once per recompute interval (or at once
        # when a listed post leaves), not on every commit.
        self.emit_due = True
        self.published: res.TrendingRanking | None = None
        self.pending_publish: res.TrendingRanking | None = None
        # Inputs of the published ranking (unknown after a restore: publish once).
        self.published_signature: Signature | None = None
        self.pending_signature: Signature | None = None
        self.next_tick = time.time()

    # -- timer --------------------------------------------------------------------
    def seconds_to_tick(self, now: float) -> float:
        return max(0.0, self.next_tick - now)

    def due(self, now: float) -> bool:
        return now >= self.next_tick

    def tick(self, producer: Producer, now: float, tasks: Mapping[int, Task]) -> None:
        """Timer: expire local candidates past the horizon; recompute the ranking."""
        self.next_tick = now + self.cfg.recompute_interval_s
        now_ms = int(now * 1000)
        horizon_ms = self.cfg.horizon_s * 1000
        for local in self.local.values():
            expired = [
                pid
                for pid, c in local.active.items()
                if now_ms - c.trending.last_engagement_ms > horizon_ms
            ]
            for pid in expired:
                del local.active[pid]
                if pid in local.top:
                    local.dirty = True
        self.emit_due = True
        if self.merging:
            self.merge_dirty = True

    # -- local stage ----------------------------------------------------------------
    def on_task_changes(self, task: Task, changed: list[st.PostRecord], now: float) -> None:
        local = self.local.setdefault(task.partition, LocalTop())
        now_ms = int(now * 1000)
        for rec in changed:
            pid = rec.post.post_id
            was_top = pid in local.top
            if qualifies(self.cfg, rec, now_ms):
                cand = candidate_of(self.cfg, rec)
                local.active[pid] = cand
                if was_top or cand.rank_key > local.kth_key or len(local.top) < self.cfg.top_k:
                    local.dirty = True
            else:
                local.active.pop(pid, None)
                if was_top:
                    local.dirty = True
                    local.removal = True

    def before_commit(self, producer: Producer, now: float, tasks: Mapping[int, Task]) -> None:
        """Write changed local top-Ks and, if due, the merged ranking."""
        for partition, local in self.local.items():
            if not local.dirty or partition not in tasks:
                continue
            if not (self.emit_due or local.removal):
                continue
            top = heapq.nsmallest(
                self.cfg.top_k, local.active.values(), key=lambda c: (-c.rank_key, c.post_id)
            )
            local.top = [c.post_id for c in top]
            local.kth_key = top[-1].rank_key if len(top) >= self.cfg.top_k else -math.inf
            value = st.CandidateList(
                partition=partition, candidates=top, removal=local.removal
            ).SerializeToString()
            local.dirty = local.removal = False
            producer.produce(self.topic_candidates, value, str(partition).encode(), partition=0)
        self.emit_due = False
        if self.merging and self.merge_dirty:
            self.merge_dirty = False
            lists = {**self.lists, **self.uncommitted}
            now_ms = int(now * 1000)
            top = select_top(
                self.cfg,
                (c for lst in lists.values() for c in lst.candidates),
                now_ms,
                self.cfg.top_k,
            )
            ranking = ranking_of(self.cfg, top, now_ms)
            signature = signature_of(top)
            current: res.TrendingRanking | None = self.published
            current_sig = self.published_signature
            if self.pending_publish is not None:
                current, current_sig = self.pending_publish, self.pending_signature
            if materially_different(
                current, current_sig, ranking, signature, self.cfg.republish_score_change
            ):
                producer.produce(
                    self.topic_trending, ranking.SerializeToString(), SCOPE.encode(), partition=0
                )
                self.pending_publish = ranking
                self.pending_signature = signature

    def after_commit(self) -> None:
        self.lists.update(self.uncommitted)
        self.uncommitted.clear()
        if self.pending_publish is not None:
            self.published = self.pending_publish
            self.published_signature = self.pending_signature
            self.pending_publish = None

    def discard(self) -> None:
        """The transaction was aborted: forget what it would have changed."""
        self.uncommitted.clear()
        self.pending_publish = None
        self.merge_dirty = self.merging
        for local in self.local.values():
            local.dirty = True

    # -- merge stage ----------------------------------------------------------------
    def on_candidates(self, msg: Message) -> None:
        if not self.merging or msg.value() is None:
            return
        lst = st.CandidateList()
        lst.ParseFromString(msg.value())  # type: ignore[arg-type]
        self.uncommitted[lst.partition] = lst
        if lst.removal:
            self.merge_dirty = True  # a deleted post must leave the ranking at once

    def unassign(self) -> None:
        self.merging = False
        self.lists.clear()
        self.uncommitted.clear()

    def on_assign(
        self,
        partitions: list[TopicPartition],
        tasks: Mapping[int, Task],
        restore_consumer: Consumer,
        now: float,
    ) -> None:
        """Rebuild local candidates of new tasks and, if ours, the merge state.

        `partitions` carry the group's committed offsets."""
        now_ms = int(now * 1000)
        for p, task in tasks.items():
            if p in self.local:
                continue
            local = LocalTop(dirty=True)
            for _, raw in task.store.scan(b"P"):
                rec = st.PostRecord()
                rec.ParseFromString(raw)
                if qualifies(self.cfg, rec, now_ms):
                    local.active[rec.post.post_id] = candidate_of(self.cfg, rec)
            self.local[p] = local
        for p in list(self.local):
            if p not in tasks:
                del self.local[p]
        mine = [tp for tp in partitions if tp.topic == self.topic_candidates]
        if mine:
            self._restore_merge(restore_consumer, mine[0])

    def _restore_merge(self, consumer: Consumer, tp: TopicPartition) -> None:
        committed = tp.offset  # the group's committed offset (fetched by the caller)
        self.lists.clear()
        self.uncommitted.clear()
        if committed > 0:
            for msg in _read_range(consumer, self.topic_candidates, OFFSET_BEGINNING, committed):
                if msg.value() is None:
                    continue
                lst = st.CandidateList()
                lst.ParseFromString(msg.value())  # type: ignore[arg-type]
                self.lists[lst.partition] = lst
        self.published = _last_ranking(consumer, self.topic_trending)
        self.merging = True
        self.merge_dirty = True
        log.info("trending_merge_assigned", partitions=len(self.lists))


def _read_range(consumer: Consumer, topic: str, start: int, end: int) -> list[Message]:
    """Records of partition 0 from start up to (not including) offset end."""
    consumer.assign([TopicPartition(topic, 0, start)])
    out: list[Message] = []
    try:
        while True:
            msgs = consumer.consume(10000, 1.0)
            done = False
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done = True
                        continue
                    raise RuntimeError(str(err))
                if (msg.offset() or 0) >= end:
                    done = True
                    break
                out.append(msg)
            if done:
                return out
    finally:
        consumer.unassign()


def _last_ranking(consumer: Consumer, topic: str) -> res.TrendingRanking | None:
    low, high = watermarks(consumer, topic, 0, 30)
    if high <= low:
        return None
    last: Any = None
    for msg in _read_range(consumer, topic, max(low, high - 64), high):
        if msg.value() is not None:
            last = msg.value()
    if last is None:
        return None
    ranking = res.TrendingRanking()
    ranking.ParseFromString(last)
    return ranking
