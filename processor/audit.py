"""`python -m processor audit`: recompute the truth from the inputs and diff the outputs.

Reads posts, likes and comments from the beginning (read_committed), recomputes every
post's counts and comments (processor/truth.py) and compares them with the table views
of posts_with_counts and post_comments; with trending on, recomputes the ranking at
the published ranking's computed_at and compares that too. Where retention deleted
the start of a likes or comments partition, it says so and checks those posts against
the changelog and the other projections instead (processor/audit_comments.py). Exit
code 0 only when everything it checked agrees.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import expired_starts, group_lag, latest_by_key, read_topic
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor import truth as truth_mod
from processor.audit_comments import (
    CrossCheck,
    Expired,
    changelog_views,
    comment_mismatches,
    live_comments,
)
from processor.trending import TrendingConfig

SCORE_TOLERANCE = 1e-6


@dataclass
class AuditReport:
    posts_checked: int = 0
    live_posts: int = 0
    mismatches: list[str] = field(default_factory=list)
    invalid_events: int = 0
    comments_checked: int = 0
    # What could not be recomputed because inputs expired, in words.
    unrecomputable: list[str] = field(default_factory=list)
    trending_checked: bool = False
    trending_entries: int = 0
    trending_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.trending_mismatches


def wait_caught_up(settings: Settings, timeout: float) -> bool:
    """Wait until the processor group has consumed everything currently in its inputs."""
    names = [
        topics.POSTS,
        topics.LIKES,
        topics.COMMENTS,
        topics.POSTS_BY_ID,
        topics.TRENDING_CANDIDATES,
    ]
    written_by_processor = frozenset(
        settings.topic(n) for n in (topics.POSTS_BY_ID, topics.TRENDING_CANDIDATES)
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            lag = group_lag(
                settings,
                settings.topic(topics.PROCESSOR_GROUP),
                [settings.topic(n) for n in names],
                written_by_processor,
                timeout=max(1.0, min(30.0, deadline - time.monotonic())),
            )
        except KafkaException as exc:
            # A broker that just came back may not answer offset queries yet.
            if not exc.args[0].retriable() and exc.args[0].code() != KafkaError._TIMED_OUT:
                raise
            lag = -1
        if lag == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def wait_fresh_ranking(settings: Settings, since_ms: int, timeout: float) -> bool:
    """Wait for a trending ranking computed at or after since_ms.

    Being caught up does not mean the ranking reflects everything yet: the merge
    publishes on its recompute timer. A ranking that does not change is not
    republished, so a False return is normal when nothing changed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = latest_by_key(settings, settings.topic(topics.TRENDING_POSTS)).get(b"global")
        if raw is not None:
            ranking = res.TrendingRanking()
            ranking.ParseFromString(raw)
            if ranking.computed_at.ToMilliseconds() >= since_ms:
                return True
        time.sleep(0.2)
    return False


def settle(settings: Settings, timeout: float) -> bool:
    """Caught up, and trending recomputed since: the state an audit should see."""
    if not wait_caught_up(settings, timeout):
        return False
    # Local lists go out on one tick, the merge publishes on the next: a ranking two
    # intervals younger than the catch-up includes everything consumed.
    interval_ms = settings.trending_interval_ms
    wait_fresh_ranking(
        settings, int(time.time() * 1000) + 2 * interval_ms, 4 * interval_ms / 1000 + 2
    )
    return True


def audit(settings: Settings, check_trending: bool = True) -> AuditReport:
    report = AuditReport()
    t = settings.topic
    truth = truth_mod.compute(
        read_topic(settings, t(topics.POSTS)),
        read_topic(settings, t(topics.LIKES)),
        read_topic(settings, t(topics.COMMENTS)),
        settings.posts_partitions,
        settings.copartitions,
    )
    report.invalid_events = truth.invalid
    table = latest_by_key(settings, t(topics.POSTS_WITH_COUNTS))
    listed = live_comments(latest_by_key(settings, t(topics.POST_COMMENTS)))
    expired = Expired(
        likes=expired_starts(settings, t(topics.LIKES)),
        comments=expired_starts(settings, t(topics.COMMENTS)),
    )
    report.unrecomputable = expired.describe()
    cross: CrossCheck | None = None
    if expired.likes or expired.comments:
        cross = CrossCheck(
            expired,
            settings.copartitions,
            *changelog_views(latest_by_key(settings, t(topics.PROCESSOR_CHANGELOG))),
            listed,
        )
    for post_id in sorted(listed.keys() - truth.posts.keys()):
        report.mismatches.append(f"{post_id}: comments of an unknown post in post_comments")
    live = truth.live()
    report.live_posts = len(live)
    keys = {k.decode() for k in table} | set(truth.posts)
    report.posts_checked = len(keys)
    for post_id in sorted(keys):
        expected = live.get(post_id)
        raw = table.get(post_id.encode())
        if expected is None:
            if raw is not None:
                why = "deleted" if post_id in truth.posts else "unknown"
                report.mismatches.append(f"{post_id}: {why} post present in posts_with_counts")
            continue
        if raw is None:
            report.mismatches.append(f"{post_id}: live post missing from posts_with_counts")
            continue
        got = ev.PostWithCounts()
        got.ParseFromString(raw)
        p = got.post
        want: tuple[object, ...] = (
            expected.author,
            expected.caption,
            expected.like_count,
            expected.comment_count,
        )
        have: tuple[object, ...] = (p.author_id, p.caption, p.like_count, p.comment_count)
        comments_expired = cross is not None and cross.comments_expired(post_id)
        report.comments_checked += len(listed.get(post_id, {}))
        report.mismatches.extend(
            comment_mismatches(expected, listed.get(post_id, {}), not comments_expired)
        )
        if cross is not None and (comments_expired or cross.likes_expired(post_id)):
            # Counts not recomputable: author and caption still are (posts is kept).
            report.mismatches.extend(cross.mismatches(post_id, got))
            want, have = want[:2], have[:2]
        if want != have:
            report.mismatches.append(
                f"{post_id}: expected author/caption/likes/comments {want!r}, got {have!r}"
            )
    if check_trending and cross is not None:
        # Scores need every engagement's time: with events gone only membership holds.
        report.unrecomputable.append("trending scores: inputs expired; only live entries checked")
        _audit_trending_members(settings, live, report)
    elif check_trending:
        _audit_trending(settings, truth, report)
    return report


def _audit_trending_members(
    settings: Settings, live: dict[str, truth_mod.TruePost], report: AuditReport
) -> None:
    raw = latest_by_key(settings, settings.topic(topics.TRENDING_POSTS)).get(b"global")
    report.trending_checked = True
    if raw is None:
        return
    ranking = res.TrendingRanking.FromString(raw)
    report.trending_entries = len(ranking.entries)
    for entry in ranking.entries:
        if entry.post_id not in live:
            report.trending_mismatches.append(f"{entry.post_id}: ranked but not a live post")


def _audit_trending(settings: Settings, truth: truth_mod.Truth, report: AuditReport) -> None:
    table = latest_by_key(settings, settings.topic(topics.TRENDING_POSTS))
    raw = table.get(b"global")
    cfg = TrendingConfig.from_settings(settings)
    if raw is None:
        expected_now = truth_mod.trending_ranking(cfg, truth, int(time.time() * 1000))
        if expected_now:
            report.trending_mismatches.append("no ranking published, but posts qualify")
        report.trending_checked = True
        return
    ranking = res.TrendingRanking()
    ranking.ParseFromString(raw)
    report.trending_checked = True
    report.trending_entries = len(ranking.entries)
    report.trending_mismatches.extend(ranking_mismatches(cfg, truth, ranking))


def ranking_mismatches(
    cfg: TrendingConfig, truth: truth_mod.Truth, ranking: res.TrendingRanking
) -> list[str]:
    """What a published ranking gets wrong against the truth at its computed_at: its
    members, their order and scores, and each entry's breakdown (likers and
    commenters counted apart, and their points)."""
    out: list[str] = []
    at_ms = ranking.computed_at.seconds * 1000 + ranking.computed_at.nanos // 1_000_000
    everyone = truth_mod.eligible_scores(cfg, truth, at_ms)
    expected = everyone[: cfg.top_k]
    true_score = dict(everyone)
    got = [(e.post_id, e.score) for e in ranking.entries]
    if len(got) != len(expected):
        out.append(f"ranking at {at_ms} has {len(got)} entries, expected {len(expected)}")
    for i, ((gid, gscore), (eid, escore)) in enumerate(zip(got, expected, strict=False), start=1):
        if not math.isclose(gscore, escore, rel_tol=SCORE_TOLERANCE):
            out.append(f"rank {i}: score {gscore:.9g} for {gid}, expected {escore:.9g} for {eid}")
        elif gid != eid and not math.isclose(
            true_score.get(gid, -1.0), escore, rel_tol=SCORE_TOLERANCE
        ):
            # Posts with equal scores may come in either order (and either side of
            # the cut-off); anything else is a real difference.
            out.append(f"rank {i}: {gid}, expected {eid}")
    if len({gid for gid, _ in got}) != len(got):
        out.append("a post appears twice in the ranking")
    for i, entry in enumerate(ranking.entries, start=1):
        post = truth.posts.get(entry.post_id)
        if post is not None:  # (an unknown post is a membership mismatch above)
            out.extend(_breakdown_mismatches(i, entry, truth_mod.trending_of(cfg, post, at_ms)))
    return out


def _breakdown_mismatches(
    rank: int, entry: res.TrendingEntry, want: truth_mod.TrueTrending
) -> list[str]:
    b, where = entry.breakdown, f"rank {rank} ({entry.post_id})"
    out = []
    if (b.counted_likers, b.counted_commenters) != (want.counted_likers, want.counted_commenters):
        out.append(
            f"{where}: likers/commenters {b.counted_likers}/{b.counted_commenters}, "
            f"expected {want.counted_likers}/{want.counted_commenters}"
        )
    # Points are parts of the score: each is as exact as the score, relative to it.
    tolerance = SCORE_TOLERANCE * want.score
    for name, have, should in (
        ("like", b.like_points, want.like_points),
        ("comment", b.comment_points, want.comment_points),
    ):
        if not math.isclose(have, should, rel_tol=SCORE_TOLERANCE, abs_tol=tolerance):
            out.append(f"{where}: {name} points {have:.9g}, expected {should:.9g}")
    return out
