"""Unit tests of the `mysocial` CLI: views, argument parsing, stream handling (no server)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, RenderableType

from client import cli
from client import views as cli_views
from mysocial.auth import actor_from_metadata
from mysocial.config import DEV_JWT_SECRET, Settings
from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import resources_pb2 as res
from tests.support.helpers import free_port

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def render_text(renderable: RenderableType, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def pid(n: int) -> str:
    """A UUID whose first 8 hex digits (the short id) are n."""
    return str(uuid.UUID(int=(n << 96) | n))


def post(n: int, **kw: object) -> res.Post:
    fields: dict[str, object] = {
        "post_id": pid(n),
        "author_id": "alice",
        "caption": f"caption {n}",
        "created_at": ts(1_700_000_000 + n),
    }
    return res.Post(**(fields | kw))  # type: ignore[arg-type]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode | None, details: str | None) -> None:
        super().__init__()
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        if self._code is None:
            raise RuntimeError("no status yet")
        return self._code

    def details(self) -> str | None:
        return self._details


class FakeStream:
    """A server stream stand-in: yields messages, then optionally raises; records cancel."""

    def __init__(self, messages: list[qry.WatchFeedResponse], then: BaseException | None = None):
        self.messages = messages
        self.then = then
        self.cancelled = False
        self.consumed = 0

    def __iter__(self):
        for m in self.messages:
            self.consumed += 1
            yield m
        if self.then is not None:
            raise self.then

    def cancel(self) -> bool:
        self.cancelled = True
        return True


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


# --- live views -----------------------------------------------------------------------------


def feed(kind: int, p: res.Post, **kw: object) -> qry.WatchFeedResponse:
    return qry.WatchFeedResponse(kind=kind, post=p, **kw)  # type: ignore[arg-type]


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


# --- argument parsing and client set-up --------------------------------------------------------


def test_global_options_work_before_and_after_the_subcommand() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--user", "bob", "--json", "like", "p"])
    after = parser.parse_args(["like", "p", "--user", "bob", "--json"])
    for args in (before, after):
        assert (args.user_name, args.json, args.post_id, args.func) == (
            "bob",
            True,
            "p",
            cli.cmd_like,
        )
    plain = parser.parse_args(["like", "p"])
    assert plain.user_name is None and plain.json is False and plain.command_addr is None


def test_subcommand_arguments() -> None:
    parse = cli.build_parser().parse_args
    args = parse(["post", "hello", "--request-id", "r1", "--image", "a.jpg", "b.png"])
    assert (args.caption, args.request_id, args.image) == ("hello", "r1", ["a.jpg", "b.png"])
    args = parse(["post", "hi", "--image", "a.jpg", "--image", "b.jpg"])
    assert args.image == ["a.jpg", "b.jpg"]
    args = parse(["uncomment", "p", "c"])
    assert (args.post_id, args.comment_id, args.func) == ("p", "c", cli.cmd_uncomment)
    args = parse(["list", "--author", "alice", "--page-size", "5", "--all"])
    assert (args.author, args.page_size, args.all, args.page_token) == ("alice", 5, True, None)
    args = parse(["comments", "p", "--all"])
    assert args.all and args.page_size == 0
    assert parse(["trending", "--limit", "3"]).limit == 3
    args = parse(["image", "m", "out.jpg", "--rendition", "thumbnail"])
    assert cli.RENDITIONS[args.rendition] == qry.IMAGE_RENDITION_THUMBNAIL
    assert parse(["image", "m", "out.jpg"]).rendition == "original"
    args = parse(["watch", "post", "a", "b", "--max-messages", "2"])
    assert (args.post_ids, args.max_messages, args.func) == (["a", "b"], 2, cli.cmd_watch_post)
    args = parse(["watch", "feed", "--author", "bob"])
    assert (args.author, args.max_messages) == ("bob", None)
    assert parse(["--json", "watch", "trending", "--limit", "5"]).json is True
    assert parse(["token", "alice"]).user == "alice"


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--page-size", "-1"],
        ["watch", "feed", "--max-messages", "0"],
        ["image", "m", "o", "--rendition", "huge"],
        ["watch"],
        ["like"],
    ],
)
def test_bad_arguments_exit_with_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_client_resolves_user_and_addresses_and_mints_a_token() -> None:
    settings = Settings(command_addr="10.0.0.1:1", query_addr="10.0.0.1:2")
    parse = cli.build_parser().parse_args
    client = cli.make_client(parse(["like", "p"]), settings, {})
    assert (client.user, client.command_addr, client.query_addr) == (
        "demo",
        "10.0.0.1:1",
        "10.0.0.1:2",
    )
    assert actor_from_metadata(client.metadata, DEV_JWT_SECRET) == "demo"
    client = cli.make_client(parse(["like", "p"]), settings, {"MYSOCIAL_USER": "carol"})
    assert client.user == "carol"
    args = parse(["--user", "dave", "--query-addr", "h:9", "like", "p"])
    client = cli.make_client(args, settings, {"MYSOCIAL_USER": "carol"})
    assert (client.user, client.query_addr) == ("dave", "h:9")
    assert actor_from_metadata(client.metadata, DEV_JWT_SECRET) == "dave"
    with pytest.raises(cli.CliError, match="invalid user"):
        cli.make_client(parse(["--user", "no spaces", "like", "p"]), settings, {})


# --- streams, uploads, downloads ---------------------------------------------------------------


def test_watch_without_terminal_prints_json_lines_and_stops_at_max_messages() -> None:
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(n)) for n in range(5)])
    out = io.StringIO()
    rc = cli.run_watch(stream, cli_views.FeedView(), live=False, max_messages=2, out=out)
    assert rc == 0 and stream.consumed == 2 and stream.cancelled
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["post"]["post_id"] == pid(1)


def test_watch_ctrl_c_exits_cleanly() -> None:
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(1))], then=KeyboardInterrupt())
    out = io.StringIO()
    assert cli.run_watch(stream, cli_views.FeedView(), live=False, out=out) == 0
    assert stream.cancelled and len(out.getvalue().splitlines()) == 1
    console = Console(file=io.StringIO(), width=120)
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(1))], then=KeyboardInterrupt())
    assert cli.run_watch(stream, cli_views.FeedView(), live=True, console=console) == 0


def test_live_watch_renders_the_final_state() -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(n)) for n in range(3)])
    assert cli.run_watch(stream, cli_views.FeedView(), live=True, console=console) == 0
    out = console.file
    assert isinstance(out, io.StringIO)
    assert "caption 2" in out.getvalue() and "3 updates received" in out.getvalue()


def test_watch_stream_error_propagates_for_main_to_report() -> None:
    stream = FakeStream([], then=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"))
    with pytest.raises(grpc.RpcError):
        cli.run_watch(stream, cli_views.FeedView(), live=False, out=io.StringIO())
    assert stream.cancelled


def test_upload_sends_metadata_then_256_kib_chunks() -> None:
    data = bytes(range(256)) * 2048  # 512 KiB
    reqs = list(cli.upload_requests(io.BytesIO(data + b"tail"), "cat.jpg", len(data) + 4))
    assert reqs[0].WhichOneof("part") == "metadata"
    assert (reqs[0].metadata.file_name, reqs[0].metadata.size_bytes) == ("cat.jpg", len(data) + 4)
    assert [len(r.chunk) for r in reqs[1:]] == [256 * 1024, 256 * 1024, 4]
    assert b"".join(r.chunk for r in reqs[1:]) == data + b"tail"


def image_stream(data: bytes, declared: int | None = None) -> list[qry.GetImageResponse]:
    info = qry.ImageInfo(
        media_id="m",
        content_type="image/png",
        width=2,
        height=1,
        size_bytes=len(data) if declared is None else declared,
    )
    chunks = [qry.GetImageResponse(chunk=data[i : i + 3]) for i in range(0, len(data), 3)]
    return [qry.GetImageResponse(info=info), *chunks]


def test_save_image_writes_the_file_atomically(tmp_path: Path) -> None:
    out = tmp_path / "img.png"
    info = cli.save_image(image_stream(b"0123456789"), out)
    assert out.read_bytes() == b"0123456789" and info.content_type == "image/png"
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        (image_stream(b"0123456789", declared=11), "incomplete image"),
        (image_stream(b"0123")[1:], "before the metadata"),
        ([], "no image metadata"),
    ],
)
def test_failed_download_leaves_the_old_file_alone(
    tmp_path: Path, messages: list[qry.GetImageResponse], error: str
) -> None:
    out = tmp_path / "img.png"
    out.write_bytes(b"old")
    with pytest.raises(cli.CliError, match=error):
        cli.save_image(messages, out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_download_interrupted_by_rpc_error_leaves_no_partial_file(tmp_path: Path) -> None:
    def broken():
        yield from image_stream(b"0123456789")[:2]
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "gone")

    with pytest.raises(grpc.RpcError):
        cli.save_image(broken(), tmp_path / "img.png")
    assert list(tmp_path.iterdir()) == []


def test_fetch_pages_follows_tokens_only_with_all() -> None:
    pages = {"": ("a", "t1"), "t1": ("b", "t2"), "t2": ("c", "")}
    calls: list[str] = []

    def fetch(token: str) -> qry.ListPostsResponse:
        calls.append(token)
        pid, nxt = pages[token]
        return qry.ListPostsResponse(posts=[res.Post(post_id=pid)], next_page_token=nxt)

    assert len(cli.fetch_pages(fetch, "", follow=False)) == 1
    got = cli.fetch_pages(fetch, "", follow=True)
    assert [p.posts[0].post_id for p in got] == ["a", "b", "c"]
    assert calls == ["", "", "t1", "t2"]
    loop = cli.fetch_pages(lambda t: qry.ListPostsResponse(next_page_token="same"), "", True)
    assert len(loop) == 2  # a repeated token stops instead of spinning


# --- main: exit codes and error lines -----------------------------------------------------------


def test_unreachable_server_is_one_error_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    rc = cli.main(["--command-addr", addr, "like", pid(1)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: UNAVAILABLE: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_local_errors_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert cli.main(["post", "hi", "--image", str(tmp_path / "missing.jpg")]) == 1
    assert capsys.readouterr().err.startswith("error: cannot read ")
    assert cli.main(["--user", "bad user", "like", "p"]) == 1
    assert capsys.readouterr().err.startswith("error: invalid user 'bad user'")
    monkeypatch.setenv("MYSOCIAL_QUERY_ADDR", "nope")
    assert cli.main(["get", "p"]) == 1
    assert "MYSOCIAL_QUERY_ADDR must look like host:port" in capsys.readouterr().err


def test_token_and_settings_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    secret = Settings.from_env().effective_jwt_secret
    assert actor_from_metadata([("authorization", f"Bearer {token}")], secret) == "alice"
    assert cli.main(["settings"]) == 0
    assert "MYSOCIAL_QUERY_ADDR=" in capsys.readouterr().out
