"""Unit tests of the `mysocial` CLI's commands: argument parsing, client set-up, stream
handling, uploads, downloads and main's exit codes (no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from client import cli, commands_read, commands_write, session, watches
from client import views as cli_views
from mysocial.auth import actor_from_metadata, mint_token
from mysocial.config import DEV_JWT_SECRET, Settings
from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import resources_pb2 as res
from tests.support.cli_fakes import FakeRpcError, FakeStream, feed, pid, post
from tests.support.helpers import free_port

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
            commands_write.cmd_like,
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
    assert (args.post_id, args.comment_id, args.func) == ("p", "c", commands_write.cmd_uncomment)
    args = parse(["list", "--author", "alice", "--page-size", "5", "--all"])
    assert (args.author, args.page_size, args.all, args.page_token) == ("alice", 5, True, None)
    args = parse(["comments", "p", "--all"])
    assert args.all and args.page_size == 0
    assert parse(["trending", "--limit", "3"]).limit == 3
    args = parse(["image", "m", "out.jpg", "--rendition", "thumbnail"])
    assert commands_read.RENDITIONS[args.rendition] == qry.IMAGE_RENDITION_THUMBNAIL
    assert parse(["image", "m", "out.jpg"]).rendition == "original"
    args = parse(["watch", "post", "a", "b", "--max-messages", "2"])
    assert (args.post_ids, args.max_messages, args.func) == (["a", "b"], 2, watches.cmd_watch_post)
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
    client = session.make_client(parse(["like", "p"]), settings, {})
    assert (client.user, client.command_addr, client.query_addr) == (
        "demo",
        "10.0.0.1:1",
        "10.0.0.1:2",
    )
    assert actor_from_metadata(client.metadata, DEV_JWT_SECRET) == "demo"
    client = session.make_client(parse(["like", "p"]), settings, {"MYSOCIAL_USER": "carol"})
    assert client.user == "carol"
    args = parse(["--user", "dave", "--query-addr", "h:9", "like", "p"])
    client = session.make_client(args, settings, {"MYSOCIAL_USER": "carol"})
    assert (client.user, client.query_addr) == ("dave", "h:9")
    assert actor_from_metadata(client.metadata, DEV_JWT_SECRET) == "dave"
    with pytest.raises(session.CliError, match="invalid user"):
        session.make_client(parse(["--user", "no spaces", "like", "p"]), settings, {})


def test_a_given_token_and_tls_flags(tmp_path: Path) -> None:
    parse, settings = cli.build_parser().parse_args, Settings()
    token = mint_token("erin", "a secret of another deployment, 32 bytes+")
    client = session.make_client(parse(["like", "p", "--token", token]), settings, {})
    assert client.user == "erin" and client.metadata == (("authorization", f"Bearer {token}"),)
    assert client.credentials is None  # plaintext unless asked
    client = session.make_client(parse(["like", "p"]), settings, {"MYSOCIAL_TOKEN": token})
    assert client.user == "erin"
    with pytest.raises(session.CliError, match="not a JWT"):
        session.make_client(parse(["--token", "nonsense", "like", "p"]), settings, {})
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    args = parse(["--cacert", str(ca), "get", "p"])
    assert session.make_client(args, settings, {}).credentials is not None
    assert session.make_client(parse(["--tls", "get", "p"]), settings, {}).credentials
    with pytest.raises(session.CliError, match="--plaintext contradicts"):
        session.make_client(parse(["--plaintext", "--tls", "get", "p"]), settings, {})
    with pytest.raises(session.CliError, match="--cacert"):
        session.make_client(parse(["--cacert", str(tmp_path / "none"), "get", "p"]), settings, {})


# --- streams, uploads, downloads ---------------------------------------------------------------


def test_watch_without_terminal_prints_json_lines_and_stops_at_max_messages() -> None:
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(n)) for n in range(5)])
    out = io.StringIO()
    rc = watches.run_watch(stream, cli_views.FeedView(), live=False, max_messages=2, out=out)
    assert rc == 0 and stream.consumed == 2 and stream.cancelled
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["post"]["post_id"] == pid(1)


def test_watch_ctrl_c_exits_cleanly() -> None:
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(1))], then=KeyboardInterrupt())
    out = io.StringIO()
    assert watches.run_watch(stream, cli_views.FeedView(), live=False, out=out) == 0
    assert stream.cancelled and len(out.getvalue().splitlines()) == 1
    console = Console(file=io.StringIO(), width=120)
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(1))], then=KeyboardInterrupt())
    assert watches.run_watch(stream, cli_views.FeedView(), live=True, console=console) == 0


def test_live_watch_renders_the_final_state() -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    stream = FakeStream([feed(qry.FEED_EVENT_KIND_CREATED, post(n)) for n in range(3)])
    assert watches.run_watch(stream, cli_views.FeedView(), live=True, console=console) == 0
    out = console.file
    assert isinstance(out, io.StringIO)
    assert "caption 2" in out.getvalue() and "3 updates received" in out.getvalue()


def test_watch_stream_error_propagates_for_main_to_report() -> None:
    stream = FakeStream([], then=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"))
    with pytest.raises(grpc.RpcError):
        watches.run_watch(stream, cli_views.FeedView(), live=False, out=io.StringIO())
    assert stream.cancelled


def test_upload_sends_metadata_then_256_kib_chunks() -> None:
    data = bytes(range(256)) * 2048  # 512 KiB
    reqs = list(
        commands_write.upload_requests(io.BytesIO(data + b"tail"), "cat.jpg", len(data) + 4)
    )
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
    info = commands_read.save_image(image_stream(b"0123456789"), out)
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
    with pytest.raises(session.CliError, match=error):
        commands_read.save_image(messages, out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_download_interrupted_by_rpc_error_leaves_no_partial_file(tmp_path: Path) -> None:
    def broken():
        yield from image_stream(b"0123456789")[:2]
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "gone")

    with pytest.raises(grpc.RpcError):
        commands_read.save_image(broken(), tmp_path / "img.png")
    assert list(tmp_path.iterdir()) == []


def test_fetch_pages_follows_tokens_only_with_all() -> None:
    pages = {"": ("a", "t1"), "t1": ("b", "t2"), "t2": ("c", "")}
    calls: list[str] = []

    def fetch(token: str) -> qry.ListPostsResponse:
        calls.append(token)
        pid, nxt = pages[token]
        return qry.ListPostsResponse(posts=[res.Post(post_id=pid)], next_page_token=nxt)

    assert len(commands_read.fetch_pages(fetch, "", follow=False)) == 1
    got = commands_read.fetch_pages(fetch, "", follow=True)
    assert [p.posts[0].post_id for p in got] == ["a", "b", "c"]
    assert calls == ["", "", "t1", "t2"]
    loop = commands_read.fetch_pages(
        lambda t: qry.ListPostsResponse(next_page_token="same"), "", True
    )
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


def test_watch_reconnects_while_unavailable_and_resumes_with_the_view() -> None:
    """A stream that fails UNAVAILABLE (query service restarted) is opened again; the
    new stream's older snapshot does not take a count back; other errors end the watch."""
    first = FakeStream(
        [feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=7), version=9)],
        then=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"),
    )
    loading = FakeStream([], then=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "loading"))
    second = FakeStream(
        [
            feed(qry.FEED_EVENT_KIND_SNAPSHOT, post(1, like_count=6), version=8),
            feed(qry.FEED_EVENT_KIND_UPDATED, post(1, like_count=8), version=12),
        ],
        then=FakeRpcError(grpc.StatusCode.INTERNAL, "boom"),
    )
    reopened = iter([loading, second])
    sleeps: list[float] = []
    view = cli_views.FeedView()
    with pytest.raises(grpc.RpcError):
        watches.run_watch(
            first,
            view,
            live=True,
            console=Console(file=io.StringIO(), width=120),
            reopen=lambda: next(reopened),
            sleep=sleeps.append,
        )
    assert first.cancelled and loading.cancelled and second.cancelled
    assert sleeps == [watches.RECONNECT_FIRST_S, watches.RECONNECT_FIRST_S * 2]
    (row,) = view.ordered()
    assert row.post.like_count == 8 and view.versions.stale == 1 and view.note == ""


def test_watch_gives_up_after_a_minute_unavailable() -> None:
    clock = iter([0.0, 30.0, watches.RECONNECT_FOR_S + 1])
    view = cli_views.PostsView([pid(1)])

    def down() -> FakeStream:
        return FakeStream([], then=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"))

    with pytest.raises(grpc.RpcError):
        watches.run_watch(
            down(), view, live=False, reopen=down, sleep=lambda _: None, clock=lambda: next(clock)
        )
    assert view.note == watches.RECONNECTING
