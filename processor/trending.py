"""Trending score: engagement velocity with exponential time decay, hard to game.

score(T) = sum over counted users u of  w(u) * 2^(-(T - t_u) / half_life)

- w(u) = comment_weight if u has a live comment on the post, else like_weight if u
  likes it, else 0: each user counts at most once per post, whatever they do.
- The author never counts (self-engagement), and a post needs at least
  min_distinct_users counted users to be eligible at all.
- t_u is the earliest event time of u's likes and comments on the post (whatever the
  order in which the topics are read), kept across unlike/re-like, so repeating an
  action cannot refresh a contribution; event times from the future are clamped to
  the broker's accept time before they get here.
- Unlikes and deleted comments retract exactly the contribution they had added.

Stored per post as a "mass" A = sum w(u) * 2^((t_u - E) / half_life) relative to a
per-post epoch E, so score(T) = A * 2^((E - T) / half_life). The ranking key
log2(A) + E / half_life does not change with T: the order of posts only changes on
events (and when they leave the horizon), while published scores decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from mysocial.config import Settings
from mysocial.internal.v1 import state_pb2 as st

# Rebase a post's epoch before 2^x could overflow a double (x ~ 1024).
_MAX_EXPONENT = 512.0


@dataclass(frozen=True)
class TrendingConfig:
    """Constants of the formula (see README "Trending" for the reasoning)."""

    half_life_s: float = 3600.0
    like_weight: float = 1.0
    comment_weight: float = 3.0
    min_distinct_users: int = 3
    horizon_s: float = 48 * 3600.0
    top_k: int = 50
    recompute_interval_s: float = 1.0
    # Publish a recomputed ranking when order, membership or counts change, or when
    # any score moved by more than this fraction since the last publication.
    republish_score_change: float = 0.01

    @property
    def half_life_ms(self) -> float:
        return self.half_life_s * 1000.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TrendingConfig:
        """The formula's constants as configured (the processor and the audit agree)."""
        return cls(
            half_life_s=settings.trending_half_life_s,
            like_weight=settings.trending_like_weight,
            comment_weight=settings.trending_comment_weight,
            min_distinct_users=settings.trending_min_users,
            horizon_s=settings.trending_horizon_s,
            top_k=settings.trending_top_k,
            recompute_interval_s=settings.trending_interval_ms / 1000.0,
        )


class Role(IntEnum):
    """What a user's contribution counts as: its weight, and whether it is in the
    likers' or the commenters' mass and count. Explicit, because the two weights may
    be configured equal and then say nothing about which one a contribution is."""

    NONE = 0
    LIKER = 1
    COMMENTER = 2


def role_of(liked: bool, live_comments: int) -> Role:
    """The role of a (non-author) user who likes the post or not and has live comments."""
    if live_comments > 0:
        return Role.COMMENTER
    if liked:
        return Role.LIKER
    return Role.NONE


def weight_of(cfg: TrendingConfig, role: Role) -> float:
    """w(u) of a user in that role."""
    if role == Role.COMMENTER:
        return cfg.comment_weight
    if role == Role.LIKER:
        return cfg.like_weight
    return 0.0


def _term(cfg: TrendingConfig, w: float, t_ms: int, epoch_ms: int) -> float:
    return w * math.pow(2.0, (t_ms - epoch_ms) / cfg.half_life_ms)


def move_epoch(cfg: TrendingConfig, state: st.TrendingState, epoch_ms: int) -> None:
    """Express the masses relative to another epoch (same scores, rescaled exactly)."""
    factor = math.pow(2.0, (state.epoch_ms - epoch_ms) / cfg.half_life_ms)
    state.like_mass *= factor
    state.comment_mass *= factor
    state.epoch_ms = epoch_ms


def _rebase(cfg: TrendingConfig, state: st.TrendingState, t_ms: int) -> None:
    """Move the epoch forward so exponents stay small."""
    if (t_ms - state.epoch_ms) / cfg.half_life_ms <= _MAX_EXPONENT:
        return
    move_epoch(cfg, state, t_ms)


def change_role(
    cfg: TrendingConfig,
    state: st.TrendingState,
    old: Role,
    new: Role,
    t_ms: int,
    old_t_ms: int | None = None,
) -> bool:
    """Replace a user's contribution as `old` dated old_t_ms (default t_ms) by one as
    `new` dated t_ms; True if anything changed."""
    old_t = t_ms if old_t_ms is None else old_t_ms
    if old == new and (old_t == t_ms or old == Role.NONE):
        state.ignored_events += 1
        return False
    _rebase(cfg, state, max(t_ms, old_t))
    if old == Role.COMMENTER:
        term = _term(cfg, weight_of(cfg, old), old_t, state.epoch_ms)
        state.comment_mass = max(0.0, state.comment_mass - term)
        state.counted_commenters -= 1
    elif old == Role.LIKER:
        term = _term(cfg, weight_of(cfg, old), old_t, state.epoch_ms)
        state.like_mass = max(0.0, state.like_mass - term)
        state.counted_likers -= 1
    if new != Role.NONE:
        term = _term(cfg, weight_of(cfg, new), t_ms, state.epoch_ms)
        if new == Role.COMMENTER:
            state.comment_mass += term
            state.counted_commenters += 1
        else:
            state.like_mass += term
            state.counted_likers += 1
        state.last_engagement_ms = max(state.last_engagement_ms, t_ms)
    # Exact zero when nobody counts any more (no floating residue).
    if state.counted_likers == 0:
        state.like_mass = 0.0
    if state.counted_commenters == 0:
        state.comment_mass = 0.0
    return True


def counted_users(state: st.TrendingState) -> int:
    return state.counted_likers + state.counted_commenters


def rank_key(cfg: TrendingConfig, state: st.TrendingState) -> float:
    """Time-invariant ordering key: log2(score(T)) + T / half_life."""
    mass = state.like_mass + state.comment_mass
    if mass <= 0.0:
        return -math.inf
    return math.log2(mass) + state.epoch_ms / cfg.half_life_ms


def score_at(cfg: TrendingConfig, key: float, t_ms: int) -> float:
    """The score at time t_ms of a post with ranking key `key`."""
    if key == -math.inf:
        return 0.0
    return math.pow(2.0, key - t_ms / cfg.half_life_ms)


def eligible(cfg: TrendingConfig, state: st.TrendingState, now_ms: int) -> bool:
    """Enough distinct users, and engaged within the horizon."""
    return (
        counted_users(state) >= cfg.min_distinct_users
        and now_ms - state.last_engagement_ms <= cfg.horizon_s * 1000.0
    )
