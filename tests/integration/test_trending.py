"""Trending against the real broker: ranking quality, anti-gaming, deletion, decay.
A crash between rankings is in tests/system/test_processor_faults.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from confluent_kafka import Producer

from command_service import commands
from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.producer import producer_config
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from processor.audit import wait_caught_up
from tests.support.helpers import auth, make_settings, wait_until
from tests.support.services import ProcessorProc, command_service
from tests.support.trending import RankingWatcher, create, like


def write_old_post(settings: Settings, likers: int, age: timedelta) -> str:
    """A post and its likes written straight to the topics with event times in the past
    (as if replayed from long ago): the command service always stamps 'now'."""
    then = datetime.now(UTC) - age
    producer = Producer(producer_config(kafka_connection(settings)))
    created = commands.create_post(
        "oldtimer", cmd.CreatePostRequest(caption="old news"), then, commands.Limits()
    )
    producer.produce(
        settings.topic("posts"), created.event.SerializeToString(), created.key.encode()
    )
    for i in range(likers):
        liked = commands.like_post(
            f"old-fan{i}", cmd.LikePostRequest(post_id=created.post_id), then
        )
        producer.produce(
            settings.topic("likes"), liked.event.SerializeToString(), liked.key.encode()
        )
    assert producer.flush(30) == 0
    return created.post_id


def test_recent_broad_engagement_beats_repeats_and_old_totals(
    trend_settings: Settings,
    running: tuple[cmd_grpc.CommandServiceStub, ProcessorProc, RankingWatcher],
) -> None:
    stub, _, watcher = running
    old = write_old_post(trend_settings, likers=120, age=timedelta(hours=6))
    broad = create(stub, "alice")
    churn = create(stub, "bob")
    for i in range(50):
        like(stub, broad, f"fan{i}")
    for round_ in range(6):  # five users like and unlike over and over
        for i in range(5):
            like(stub, churn, f"churner{i}", unlike=round_ % 2 == 1)
    for i in range(5):
        like(stub, churn, f"churner{i}")
    assert wait_caught_up(trend_settings, 60)
    # The ranking of every like above, not the first one naming the three posts: that
    # one can predate the last re-likes (rankings follow by up to two intervals).
    ranking = watcher.wait_for_like_counts({old: 120, broad: 50, churn: 5}, timeout=30)
    ids = [e.post_id for e in ranking.entries]
    assert ids.index(broad) < ids.index(churn)
    assert ids.index(broad) < ids.index(old)
    entries = {e.post_id: e for e in ranking.entries}
    assert entries[old].like_count == 120 > entries[broad].like_count == 50
    # Thirty like/unlike actions, yet each churner counts once, dated at their first like.
    assert entries[churn].breakdown.counted_likers == 5
    assert entries[churn].score <= 5 * trend_settings.trending_like_weight + 1e-9
    assert entries[broad].score > 40


def test_a_ring_of_three_accounts_cannot_reach_the_top_ten(
    trend_settings: Settings,
    running: tuple[cmd_grpc.CommandServiceStub, ProcessorProc, RankingWatcher],
) -> None:
    stub, _, watcher = running
    organic = []
    for n in range(12):
        post = create(stub, f"creator{n}")
        for i in range(3 + n):
            like(stub, post, f"crowd{n}-{i}")
        organic.append(post)
    ring = ["ring1", "ring2", "ring3"]
    ring_posts = {user: create(stub, user) for user in ring}
    for _ in range(20):  # each ring account likes and comments the others' posts, a lot
        for user in ring:
            for owner, post in ring_posts.items():
                if owner != user:
                    like(stub, post, user)
                    stub.AddComment(
                        cmd.AddCommentRequest(post_id=post, text="🔥"), metadata=auth(user)
                    )
    assert wait_caught_up(trend_settings, 60)
    wait_until(
        lambda: len(watcher.ids()) >= 10 and set(organic[-10:]) <= set(watcher.ids()),
        timeout=30,
        what="organic posts ranked",
    )
    top10 = watcher.ids()[:10]
    assert not set(ring_posts.values()) & set(top10)
    assert not set(ring_posts.values()) & set(watcher.ids())  # not even eligible


def test_a_deleted_post_leaves_the_ranking_within_one_interval(
    trend_settings: Settings,
    running: tuple[cmd_grpc.CommandServiceStub, ProcessorProc, RankingWatcher],
) -> None:
    stub, _, watcher = running
    posts = []
    for n in range(3):
        post = create(stub, f"star{n}")
        for i in range(5 + n):
            like(stub, post, f"viewer{n}-{i}")
        posts.append(post)
    wait_until(lambda: set(posts) <= set(watcher.ids()), timeout=30, what="posts ranked")
    victim = posts[-1]
    stub.DeletePost(cmd.DeletePostRequest(post_id=victim), metadata=auth("star2"))
    deleted_at = time.monotonic()
    wait_until(
        lambda: watcher.ids() and victim not in watcher.ids(),
        timeout=10,
        interval=0.01,
        what="deleted post to leave trending",
    )
    arrival = next(
        t
        for t, r in watcher.rankings
        if t >= deleted_at and victim not in [e.post_id for e in r.entries]
    )
    elapsed = arrival - deleted_at
    print(f"deleted post left trending_posts after {elapsed * 1000:.0f} ms")
    assert elapsed <= trend_settings.trending_interval_ms / 1000.0


def test_scores_decay_without_events(kafka_bootstrap: str, tmp_path: Path, log_dir: Path) -> None:
    s = make_settings(
        kafka_bootstrap,
        processor_state_dir=str(tmp_path / "state"),
        trending_half_life_s=5.0,
        trending_interval_ms=500,
    )
    provision(s)
    processor = ProcessorProc(s, "a", log_dir)
    processor.start()
    watcher = RankingWatcher(s)
    try:
        with command_service(s, log_dir) as addr:
            stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(addr))
            post = create(stub, "decayer")
            for i in range(4):
                like(stub, post, f"u{i}")

        def three_rankings_of_post() -> bool:
            recent = [r for _, r in watcher.rankings[-3:]]
            return len(recent) == 3 and all(
                [e.post_id for e in r.entries] == [post] for r in recent
            )

        wait_until(three_rankings_of_post, timeout=30, what="rankings republished as scores decay")
        first, last = watcher.rankings[-3][1], watcher.rankings[-1][1]
        assert last.computed_at.ToMilliseconds() > first.computed_at.ToMilliseconds()
        assert last.entries[0].score < first.entries[0].score  # republished as it decays
    finally:
        watcher.close()
        processor.terminate()
