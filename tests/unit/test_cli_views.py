"""Unit tests of the `mysocial` CLI's rendering (client.views): formatting, static
tables and live views, all without I/O or a server."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from client import views as cli_views
from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import resources_pb2 as res
from tests.support.cli_fakes import NOW, FakeRpcError, feed, pid, post, render_text, ts

# --- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "text"),
    [
        (0.0, "0"),
        (1.0, "1.00"),
        (123.456, "123"),
        (61.728, "61.7"),
        (12345.6, "12300"),
        (0.0123456, "0.0123"),
        (9.996, "10.0"),
        (float("inf"), "inf"),
    ],
)
def test_scores_show_three_significant_digits_without_exponent(score: float, text: str) -> None:
    assert cli_views.format_score(score) == text


def test_one_line_collapses_newlines_and_cuts() -> None:
    assert cli_views.one_line("a\n  b\tc") == "a b c"
    assert cli_views.one_line("x" * 100, 10) == "x" * 9 + "…"


def test_unset_timestamp_formats_empty() -> None:
    assert cli_views.format_timestamp(Timestamp()) == ""
    assert cli_views.format_timestamp(ts(1_700_000_000)).startswith("2023-11-1")


def test_json_line_is_one_line_with_proto_field_names() -> None:
    msg = qry.WatchFeedResponse(
        kind=qry.FEED_EVENT_KIND_UPDATED,
        post=post(1, like_count=5),
        skipped_updates=3,
        snapshot_complete=True,
    )
    line = cli_views.json_line(msg)
    assert "\n" not in line
    data = json.loads(line)
    assert data["kind"] == "FEED_EVENT_KIND_UPDATED"
    assert data["skipped_updates"] == "3"  # proto3 JSON: 64-bit integers are strings
    assert data["snapshot_complete"] is True
    assert data["post"]["like_count"] == "5"
    assert data["post"]["post_id"] == pid(1)


def test_rpc_error_is_one_line_with_status_name() -> None:
    err = FakeRpcError(grpc.StatusCode.NOT_FOUND, "post p-1 not found")
    assert cli_views.format_rpc_error(err) == "error: NOT_FOUND: post p-1 not found"
    assert cli_views.format_rpc_error(FakeRpcError(grpc.StatusCode.CANCELLED, "")) == (
        "error: CANCELLED"
    )
    assert cli_views.format_rpc_error(FakeRpcError(None, None)) == "error: UNKNOWN"


def test_user_text_is_not_interpreted_as_markup() -> None:
    text = render_text(cli_views.posts_table([post(1, caption="[bold]hi[/bold] :smile:")]))
    assert "[bold]hi[/bold]" in text


# --- static tables --------------------------------------------------------------------------


def test_trending_table_formats_rank_score_and_counts() -> None:
    entries = [
        res.TrendingEntry(
            post_id=pid(7),
            rank=1,
            score=123.456,
            like_count=40,
            comment_count=2,
            author_id="bob",
        ),
        res.TrendingEntry(post_id=pid(8), rank=2, score=0.98765, like_count=3, author_id="eve"),
    ]
    lines = render_text(cli_views.trending_table(entries)).splitlines()
    first = next(line for line in lines if pid(7) in line)
    second = next(line for line in lines if pid(8) in line)
    assert first.split() == ["1", pid(7), "bob", "123", "40", "2"]
    assert second.split() == ["2", pid(8), "eve", "0.988", "3", "0"]
    short = render_text(cli_views.trending_table(entries, short=True))
    assert "00000007 " in short and pid(7) not in short


def test_posts_and_comments_tables_show_full_ids() -> None:
    text = render_text(cli_views.posts_table([post(1, like_count=4, comment_count=1)]))
    assert pid(1) in text and "caption 1" in text
    comment = res.Comment(comment_id=pid(9), author_id="bob", text="multi\nline")
    text = render_text(cli_views.comments_table([comment]))
    assert pid(9) in text and "multi line" in text


def test_post_detail_lists_every_field() -> None:
    p = post(1, like_count=4, comment_count=2, media_ids=["a" * 64])
    p.media.append(res.Media(media_id="a" * 64, content_type="image/png", width=3, height=2))
    text = render_text(cli_views.post_detail_table(p))
    for expected in ("alice", "caption 1", "4", "2", "a" * 64, "image/png, 3x2"):
        assert expected in text


def test_posts_table_fits_80_columns_and_keeps_ids_whole() -> None:
    long = post(1, caption="word " * 50, author_id="a-very-long-user-name-" + "x" * 30)
    text = render_text(cli_views.posts_table([long]), width=80)
    assert pid(1) in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_feed_view_keeps_the_newest_30_posts() -> None:
    view = cli_views.FeedView()
    for n in range(20, 0, -1):  # snapshot, newest first
        view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(n)), NOW)
    for n in range(21, 36):
        view.apply(feed(qry.FEED_EVENT_KIND_CREATED, post(n)), NOW)
    rows = view.ordered()
    assert len(rows) == cli_views.FEED_MAX_ROWS == 30
    assert [r.post.post_id for r in rows] == [pid(n) for n in range(35, 5, -1)]
    assert rows[0].mark == "created" and rows[-1].mark == ""
    text = render_text(view.render())
    assert "caption 35" in text and "caption 5" not in text
    assert "35 updates received" in text


def test_feed_view_marks_deletions_and_keeps_what_it_knew() -> None:
    view = cli_views.FeedView()
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1)), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(2), snapshot_complete=True), NOW)
    # A deletion carries only the post id.
    view.apply(feed(qry.FEED_EVENT_KIND_DELETED, res.Post(post_id=pid(1))), NOW)
    # Deleting a post the view never showed changes nothing.
    view.apply(feed(qry.FEED_EVENT_KIND_DELETED, res.Post(post_id=pid(99))), NOW)
    rows = {r.post.post_id: r for r in view.ordered()}
    assert set(rows) == {pid(1), pid(2)}
    deleted = rows[pid(1)]
    assert deleted.mark == "deleted" and deleted.post.caption == "caption 1"
    line = next(x for x in render_text(view.render()).splitlines() if "caption 1" in x)
    assert "deleted" in line


def test_feed_view_updates_in_place_and_sums_skipped_updates() -> None:
    view = cli_views.FeedView()
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1), snapshot_complete=True), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=9), skipped_updates=4), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=12), skipped_updates=3), NOW)
    (row,) = view.ordered()
    assert row.mark == "updated" and row.post.like_count == 12
    assert (view.updates, view.skipped) == (3, 7)
    text = render_text(view.render())
    assert "3 updates received" in text and "7 skipped by server" in text


def test_feed_view_empty_snapshot_marker() -> None:
    view = cli_views.FeedView()
    assert "loading snapshot" in render_text(view.render())
    view.apply(qry.WatchFeedResponse(snapshot_complete=True), NOW)
    assert view.snapshot_complete and not view.rows
    assert "loading snapshot" not in render_text(view.render())


def test_posts_view_keeps_requested_order_and_marks_deleted() -> None:
    a, b = pid(1), pid(2)
    view = cli_views.PostsView([a, b])
    view.apply(qry.WatchPostsResponse(post=post(2, like_count=3), skipped_updates=2), NOW)
    view.apply(qry.WatchPostsResponse(post=post(1, like_count=1)), NOW)
    view.apply(qry.WatchPostsResponse(post=res.Post(post_id=b), deleted=True), NOW)
    assert list(view.rows) == [a, b]
    assert view.rows[b].mark == "deleted" and view.rows[b].post.like_count == 3
    text = render_text(view.render())
    assert text.index(a[:8]) < text.index(b[:8])
    assert "(deleted)" in text and "3 updates received" in text and "2 skipped" in text


def test_trending_view_shows_the_latest_ranking() -> None:
    view = cli_views.TrendingView()
    assert "no trending" not in render_text(view.render())
    first = qry.WatchTrendingResponse(
        entries=[res.TrendingEntry(post_id=pid(1), rank=1, score=5.0)]
    )
    second = qry.WatchTrendingResponse(
        entries=[
            res.TrendingEntry(post_id=pid(2), rank=1, score=2.71828),
            res.TrendingEntry(post_id=pid(1), rank=2, score=1.0),
        ],
        computed_at=ts(1_700_000_000),
        skipped_updates=5,
    )
    view.apply(first, NOW)
    view.apply(second, NOW)
    text = render_text(view.render())
    assert "2.72" in text and "5.00" not in text
    assert "Trending (computed" in text and "5 skipped" in text
    view.apply(qry.WatchTrendingResponse(), NOW)
    assert "no trending posts yet" in render_text(view.render())


def test_views_drop_states_older_than_what_they_show() -> None:
    """After a reconnect the snapshot may come from an instance a little behind: the
    views keep the highest version per post, and a deletion stays final."""
    view = cli_views.FeedView()
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1, like_count=5), version=10), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1, like_count=3), version=8), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=6), version=11), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=9)), NOW)  # no version
    assert view.ordered()[0].post.like_count == 9 and view.versions.stale == 1
    view.apply(feed(qry.FEED_EVENT_KIND_DELETED, res.Post(post_id=pid(1)), version=12), NOW)
    view.apply(feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1, like_count=9), version=11), NOW)
    assert view.ordered()[0].mark == "deleted" and view.versions.stale == 2

    posts = cli_views.PostsView([pid(2)])
    posts.apply(qry.WatchPostsResponse(post=post(2, like_count=4), version=5), NOW)
    posts.apply(qry.WatchPostsResponse(post=post(2, like_count=2), version=3), NOW)
    assert posts.rows[pid(2)].post.like_count == 4 and posts.versions.stale == 1
