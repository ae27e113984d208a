"""trending_posts: the global ranking, in two stages inside the processor's transactions.

1. Local (`LocalCandidates`, downstream of posts_with_counts in each count task):
   a task keeps its eligible posts by the time-invariant rank key (processor/
   trending.py) and, when its top-K changes, writes the list to the compacted
   `mysocial.trending-candidates` topic (key = partition).
2. Merge (`TrendingPosts`, the task on the candidates topic's single partition):
   keeps the latest list of every partition, merges them into one ranking evaluated
   at "now" (processor/ranking.py) and writes it to `trending_posts` (key "global")
   when it changed: on new candidates and on a timer, since scores decay and posts
   leave the horizon.

The merge state is restored from the candidates topic up to the committed offset,
so it always matches the offsets the stage resumes from.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Message

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.log import get_logger
from mysocial.v1 import resources_pb2 as res
from processor.projection import Context, Offsets, Projection
from processor.ranking import (
    SCOPE,
    Signature,
    candidate_of,
    materially_different,
    qualifies,
    ranking_of,
    select_top,
    signature_of,
)
from processor.restore import Restoration
from processor.trending import TrendingConfig

log = get_logger("processor.trending")

RANKINGS_READ_BACK = 64  # the last published ranking is among the newest records


@dataclass
class LocalTop:
    """One task's eligible posts and the top-K it last published."""

    active: dict[str, st.Candidate] = field(default_factory=dict)
    top: list[str] = field(default_factory=list)
    kth_key: float = -math.inf
    dirty: bool = False
    removal: bool = False


class LocalCandidates:
    """Stage 1, fed by posts_with_counts (a CountsListener)."""

    def __init__(self, ctx: Context, cfg: TrendingConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.topic_candidates = ctx.settings.topic(topics.TRENDING_CANDIDATES)
        self.local: dict[int, LocalTop] = {}  # kept while suspended, dropped on close
        self.running: set[int] = set()
        # Lists are written at most once per recompute interval (or at once when a
        # listed post leaves), not on every commit.
        self.emit_due = True

    def counts_started(self, partition: int, posts: Iterator[st.PostRecord]) -> None:
        self.running.add(partition)
        if partition in self.local:
            return  # given back after a suspension: its candidates are still current
        now_ms = int(self.ctx.clock() * 1000)
        local = LocalTop(dirty=True)
        for rec in posts:
            if qualifies(self.cfg, rec, now_ms):
                local.active[rec.post.post_id] = candidate_of(self.cfg, rec)
        self.local[partition] = local

    def counts_stopped(self, partition: int, closed: bool) -> None:
        self.running.discard(partition)
        if closed:
            self.local.pop(partition, None)

    def counts_changed(self, partition: int, changed: list[st.PostRecord], now: float) -> None:
        local = self.local.setdefault(partition, LocalTop())
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

    def expire(self, now_ms: int) -> None:
        """Timer: candidates past the horizon leave; lists may be written again."""
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

    def emit(self) -> None:
        """Write the changed top-K of each running task (in the open transaction)."""
        for partition, local in self.local.items():
            if not local.dirty or partition not in self.running:
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
            self.ctx.output.produce(self.topic_candidates, str(partition).encode(), value, 0)
        self.emit_due = False

    def abort(self) -> None:
        for local in self.local.values():
            local.dirty = True


class TrendingPosts(Projection):
    """Stage 2 (the merge) as a projection; stage 1 rides along as `local`."""

    name = "trending_posts"
    sources = (topics.TRENDING_CANDIDATES,)

    def __init__(self, ctx: Context, cfg: TrendingConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.local = LocalCandidates(ctx, cfg)
        self.topic_candidates = ctx.settings.topic(topics.TRENDING_CANDIDATES)
        self.topic_trending = ctx.settings.topic(topics.TRENDING_POSTS)
        # Merge stage (only while this instance runs the candidates task).
        self.merging = False
        self.lists: dict[int, st.CandidateList] = {}
        self.uncommitted: dict[int, st.CandidateList] = {}
        self.merge_dirty = False
        self.published: res.TrendingRanking | None = None
        self.pending_publish: res.TrendingRanking | None = None
        # Inputs of the published ranking (unknown after a restore: publish once).
        self.published_signature: Signature | None = None
        self.pending_signature: Signature | None = None
        self.restored_ranking: bytes | None = None
        self.next_tick = time.time()

    # -- tasks --------------------------------------------------------------------------
    def restorations(self, partition: int, committed: Offsets) -> list[Restoration]:
        self.lists.clear()
        self.uncommitted.clear()
        self.restored_ranking = None
        out = []
        end = committed.get((self.topic_candidates, partition), 0)
        if end > 0:
            out.append(
                Restoration(self.topic_candidates, partition, OFFSET_BEGINNING, end, self._lists)
            )
        low, high = self.ctx.watermarks(self.topic_trending, 0)
        if high > low:
            start = max(low, high - RANKINGS_READ_BACK)
            out.append(Restoration(self.topic_trending, 0, start, high, self._rankings))
        return out

    def _lists(self, msgs: list[Message]) -> None:
        for msg in msgs:
            value = msg.value()
            if value is not None:
                lst = st.CandidateList()
                lst.ParseFromString(value)
                self.lists[lst.partition] = lst

    def _rankings(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if msg.value() is not None:
                self.restored_ranking = msg.value()

    def start(self, partition: int) -> None:
        self.published = None
        if self.restored_ranking is not None:
            self.published = res.TrendingRanking()
            self.published.ParseFromString(self.restored_ranking)
        self.published_signature = None
        self.merging = True
        self.merge_dirty = True
        log.info("trending_merge_assigned", partitions=len(self.lists))

    def suspend(self, partition: int) -> None:
        self.merging = False
        self.lists.clear()
        self.uncommitted.clear()

    # -- records --------------------------------------------------------------------------
    def apply(self, msgs: list[Message], start: int) -> int:
        run = self.ctx.run_of(msgs, start, self.topic_candidates)
        for msg in run:
            value = msg.value()
            if self.merging and value is not None:
                lst = st.CandidateList()
                lst.ParseFromString(value)
                self.uncommitted[lst.partition] = lst
                if lst.removal:
                    self.merge_dirty = True  # a deleted post must leave the ranking at once
        return start + len(run)

    # -- timer --------------------------------------------------------------------------
    def next_timer(self, now: float) -> float:
        return max(0.0, self.next_tick - now)

    def punctuate(self, now: float) -> bool:
        """Expire local candidates past the horizon; recompute the ranking."""
        if now < self.next_tick:
            return False
        self.next_tick = now + self.cfg.recompute_interval_s
        self.local.expire(int(now * 1000))
        if self.merging:
            self.merge_dirty = True
        return True

    # -- commit --------------------------------------------------------------------------
    def prepare_commit(self, now: float) -> None:
        """Write changed local top-Ks and, if due, the merged ranking."""
        self.local.emit()
        if not (self.merging and self.merge_dirty):
            return
        self.merge_dirty = False
        lists = {**self.lists, **self.uncommitted}
        now_ms = int(now * 1000)
        top = select_top(
            self.cfg, (c for lst in lists.values() for c in lst.candidates), now_ms, self.cfg.top_k
        )
        ranking = ranking_of(self.cfg, top, now_ms)
        signature = signature_of(top)
        current, current_sig = self.published, self.published_signature
        if self.pending_publish is not None:
            current, current_sig = self.pending_publish, self.pending_signature
        if materially_different(
            current, current_sig, ranking, signature, self.cfg.republish_score_change
        ):
            self.ctx.output.produce(
                self.topic_trending, SCOPE.encode(), ranking.SerializeToString(), 0
            )
            self.pending_publish = ranking
            self.pending_signature = signature

    def post_commit(self) -> None:
        self.lists.update(self.uncommitted)
        self.uncommitted.clear()
        if self.pending_publish is not None:
            self.published = self.pending_publish
            self.published_signature = self.pending_signature
            self.pending_publish = None

    def abort(self) -> None:
        """Forget what the aborted transaction would have changed."""
        self.uncommitted.clear()
        self.pending_publish = None
        self.merge_dirty = self.merging
        self.local.abort()
