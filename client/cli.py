"""`mysocial`: the command-line client for people trying the system.

  mysocial token alice                        print a development bearer token for alice
  mysocial settings                           every setting with its default
  mysocial --user alice post "first light"    create a post (--image FILE to attach images)
  mysocial --user bob like POST_ID            also: unlike, comment, uncomment, delete
  mysocial get POST_ID                        also: list [--all], comments POST_ID, trending
  mysocial image MEDIA_ID out.jpg             download an image (--rendition thumbnail)
  mysocial watch feed                         live views: watch post ID..., watch trending

Every call acts as --user (default $MYSOCIAL_USER, else "demo"): the CLI mints that
user's development token with MYSOCIAL_JWT_SECRET. --json prints raw responses; watches
print one JSON line per message when stdout is not a terminal. Failures print
`error: <STATUS>: <details>` and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TextIO, TypeVar

import grpc
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.live import Live

from client import loadgen, views
from mysocial.auth import mint_token
from mysocial.config import ConfigError, Settings, documented_settings, split_addr
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import query_service_pb2_grpc as qry_grpc

DEFAULT_USER = "demo"
USER_ENV = "MYSOCIAL_USER"
UNARY_TIMEOUT_S = 10.0
# Uploads and downloads move bytes over possibly slow links: more than a unary call.
TRANSFER_TIMEOUT_S = 300.0
UPLOAD_CHUNK_BYTES = 256 * 1024
RENDITIONS = {
    "original": qry.IMAGE_RENDITION_ORIGINAL,
    "feed": qry.IMAGE_RENDITION_FEED,
    "thumbnail": qry.IMAGE_RENDITION_THUMBNAIL,
}

M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)


class CliError(Exception):
    """A local failure (bad file, bad user id): printed as `error: <message>`, exit 1."""


class WatchView(Protocol[M_contra]):
    """What run_watch needs from a live view (see client.views)."""

    def apply(self, msg: M_contra, now: datetime) -> None: ...

    def render(self) -> RenderableType: ...


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


P = TypeVar("P", bound=_Page)


@dataclass(frozen=True)
class Client:
    """Who acts, where the services are and how to print: shared by every remote command."""

    user: str
    command_addr: str
    query_addr: str
    json: bool
    metadata: tuple[tuple[str, str], ...]

    @contextlib.contextmanager
    def commands(self) -> Iterator[cmd_grpc.CommandServiceStub]:
        with grpc.insecure_channel(self.command_addr) as channel:
            yield cmd_grpc.CommandServiceStub(channel)

    @contextlib.contextmanager
    def queries(self) -> Iterator[qry_grpc.QueryServiceStub]:
        with grpc.insecure_channel(self.query_addr) as channel:
            yield qry_grpc.QueryServiceStub(channel)

    def live(self) -> bool:
        """Live views only make sense on a terminal; pipes and --json get JSON lines."""
        return not self.json and sys.stdout.isatty()

    def emit(self, message: Message, human: str) -> None:
        """Print a unary response: raw JSON with --json, else the one-line summary."""
        print(views.json_document(message) if self.json else human)


def make_client(args: argparse.Namespace, settings: Settings, env: Mapping[str, str]) -> Client:
    """Resolve the global options (flag, then environment, then settings) and mint the
    acting user's token locally, so trying the system needs no login step."""
    user = args.user_name or env.get(USER_ENV) or DEFAULT_USER
    command_addr = args.command_addr or settings.command_addr
    query_addr = args.query_addr or settings.query_addr
    split_addr(command_addr, "--command-addr")
    split_addr(query_addr, "--query-addr")
    try:
        token = mint_token(user, settings.effective_jwt_secret, settings.token_ttl_s)
    except ValueError:
        raise CliError(
            f"invalid user {user!r}: 1-64 letters, digits, _ . @ - (not starting with one of _.@-)"
        ) from None
    return Client(
        user=user,
        command_addr=command_addr,
        query_addr=query_addr,
        json=bool(args.json),
        metadata=(("authorization", f"Bearer {token}"),),
    )


def _console() -> Console:
    return Console(highlight=False)


# --- local commands ---------------------------------------------------------------------


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    ttl = args.ttl if args.ttl is not None else settings.token_ttl_s
    try:
        print(mint_token(args.user, settings.effective_jwt_secret, ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_loadgen(args: argparse.Namespace, settings: Settings) -> int:
    spec = loadgen.LoadSpec(
        addr=args.command_addr or settings.command_addr,
        rate=args.rate,
        duration=args.duration,
        workers=args.workers,
        users=args.users,
        secret=settings.effective_jwt_secret,
        only=args.only or "",
    )
    summary = loadgen.run(spec, progress=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        loadgen.print_summary(summary)
    return 0 if summary["accepted"] else 1


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    for s in documented_settings():
        print(f"{s.env}={s.default!s}\n    {s.doc}")
    return 0


# --- commands (write side) --------------------------------------------------------------


def upload_requests(
    stream: BinaryIO, file_name: str, size: int, chunk_bytes: int = UPLOAD_CHUNK_BYTES
) -> Iterator[cmd.UploadImageRequest]:
    """The UploadImage stream: metadata first (lets the server reject an oversized file
    before any byte), then the bytes in chunks, read lazily so memory stays flat."""
    yield cmd.UploadImageRequest(
        metadata=cmd.ImageUploadMetadata(file_name=file_name, size_bytes=size)
    )
    while chunk := stream.read(chunk_bytes):
        yield cmd.UploadImageRequest(chunk=chunk)


def cmd_post(args: argparse.Namespace, client: Client) -> int:
    with contextlib.ExitStack() as stack:
        # Open every image first: a typo in the last path should not upload the others.
        files: list[tuple[Path, BinaryIO, int]] = []
        for name in args.image or ():
            path = Path(name)
            try:
                opened = stack.enter_context(path.open("rb"))
                files.append((path, opened, os.fstat(opened.fileno()).st_size))
            except OSError as exc:
                raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
        with client.commands() as stub:
            media_ids: list[str] = []
            for path, f, size in files:
                uploaded = stub.UploadImage(
                    upload_requests(f, path.name, size),
                    timeout=TRANSFER_TIMEOUT_S,
                    metadata=client.metadata,
                )
                media_ids.append(uploaded.media_id)
                print(f"uploaded {path}: {uploaded.media_id}", file=sys.stderr)
            resp = stub.CreatePost(
                cmd.CreatePostRequest(
                    caption=args.caption, media_ids=media_ids, request_id=args.request_id or ""
                ),
                timeout=UNARY_TIMEOUT_S,
                metadata=client.metadata,
            )
    client.emit(resp, f"post created: {resp.post_id}")
    return 0


def cmd_like(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = stub.LikePost(
            cmd.LikePostRequest(post_id=args.post_id),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    client.emit(resp, f"liked {resp.post_id}")
    return 0


def cmd_unlike(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = stub.UnlikePost(
            cmd.UnlikePostRequest(post_id=args.post_id),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    client.emit(resp, f"unliked {resp.post_id}")
    return 0


def cmd_comment(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = stub.AddComment(
            cmd.AddCommentRequest(post_id=args.post_id, text=args.text),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    client.emit(resp, f"comment added: {resp.comment_id} (post {resp.post_id})")
    return 0


def cmd_uncomment(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = stub.DeleteComment(
            cmd.DeleteCommentRequest(post_id=args.post_id, comment_id=args.comment_id),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    client.emit(resp, f"comment deleted: {resp.comment_id} (post {resp.post_id})")
    return 0


def cmd_delete(args: argparse.Namespace, client: Client) -> int:
    with client.commands() as stub:
        resp = stub.DeletePost(
            cmd.DeletePostRequest(post_id=args.post_id),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    client.emit(resp, f"post deleted: {resp.post_id}")
    return 0


# --- queries (read side) ----------------------------------------------------------------


def fetch_pages(fetch: Callable[[str], P], first_token: str, follow: bool) -> list[P]:
    """One page, or with `follow` every page until next_page_token is empty. A token
    seen twice stops the loop: a misbehaving server must not make the CLI spin."""
    pages = [fetch(first_token)]
    seen = {first_token}
    while follow and (token := pages[-1].next_page_token) and token not in seen:
        seen.add(token)
        pages.append(fetch(token))
    return pages


def cmd_get(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:
        resp = stub.GetPost(
            qry.GetPostRequest(post_id=args.post_id),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    if client.json:
        print(views.json_document(resp))
    else:
        _console().print(views.post_detail_table(resp.post))
    return 0


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:

        def fetch(token: str) -> qry.ListPostsResponse:
            return stub.ListPosts(
                qry.ListPostsRequest(
                    author_id=args.author or "", page_size=args.page_size, page_token=token
                ),
                timeout=UNARY_TIMEOUT_S,
                metadata=client.metadata,
            )

        pages = fetch_pages(fetch, args.page_token or "", args.all)
    merged = qry.ListPostsResponse(
        posts=[p for page in pages for p in page.posts],
        next_page_token=pages[-1].next_page_token,
    )
    if client.json:
        print(views.json_document(merged))
        return 0
    if not merged.posts:
        print("no posts")
    else:
        _console().print(views.posts_table(merged.posts))
        print(f"{len(merged.posts)} post{'s' if len(merged.posts) != 1 else ''}")
    if merged.next_page_token:
        print(f"more: --all, or --page-token {merged.next_page_token}")
    return 0


def cmd_comments(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:

        def fetch(token: str) -> qry.ListCommentsResponse:
            return stub.ListComments(
                qry.ListCommentsRequest(
                    post_id=args.post_id, page_size=args.page_size, page_token=token
                ),
                timeout=UNARY_TIMEOUT_S,
                metadata=client.metadata,
            )

        pages = fetch_pages(fetch, args.page_token or "", args.all)
    merged = qry.ListCommentsResponse(
        comments=[c for page in pages for c in page.comments],
        next_page_token=pages[-1].next_page_token,
    )
    if client.json:
        print(views.json_document(merged))
        return 0
    if not merged.comments:
        print("no comments")
    else:
        _console().print(views.comments_table(merged.comments))
        print(f"{len(merged.comments)} comment{'s' if len(merged.comments) != 1 else ''}")
    if merged.next_page_token:
        print(f"more: --all, or --page-token {merged.next_page_token}")
    return 0


def cmd_trending(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:
        resp = stub.GetTrending(
            qry.GetTrendingRequest(limit=args.limit),
            timeout=UNARY_TIMEOUT_S,
            metadata=client.metadata,
        )
    if client.json:
        print(views.json_document(resp))
    elif not resp.entries:
        print("no trending posts yet")
    else:
        _console().print(views.trending_table(resp.entries))
        computed = views.format_timestamp(resp.computed_at)
        if computed:
            print(f"computed at {computed}")
    return 0


def save_image(responses: Iterable[qry.GetImageResponse], out: Path) -> qry.ImageInfo:
    """Stream a GetImage download into `out` atomically: bytes go to a temporary file in
    the same folder, replaced onto `out` only once complete, so an interrupted or failed
    download never leaves a truncated image behind (nor clobbers an existing one)."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".part", dir=out.absolute().parent
        )
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        info: qry.ImageInfo | None = None
        received = 0
        with os.fdopen(fd, "wb") as f:
            for msg in responses:
                part = msg.WhichOneof("part")
                if part == "info":
                    if info is not None:
                        raise CliError("server sent the image metadata twice")
                    info = msg.info
                elif part == "chunk":
                    if info is None:
                        raise CliError("server sent image bytes before the metadata")
                    f.write(msg.chunk)
                    received += len(msg.chunk)
            if info is None:
                raise CliError("server sent no image metadata")
            if info.size_bytes and received != info.size_bytes:
                raise CliError(f"incomplete image: {received} of {info.size_bytes} bytes")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # mkstemp makes the file 0600; give it the usual permissions
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        tmp.replace(out)
        return info
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful replace


def cmd_image(args: argparse.Namespace, client: Client) -> int:
    out = Path(args.out_file)
    with client.queries() as stub:
        call = stub.GetImage(
            qry.GetImageRequest(media_id=args.media_id, rendition=RENDITIONS[args.rendition]),
            timeout=TRANSFER_TIMEOUT_S,
            metadata=client.metadata,
        )
        try:
            info = save_image(call, out)
        finally:
            call.cancel()  # no-op when complete; stops the server on a local failure
    if client.json:
        print(views.json_document(info))
    else:
        print(
            f"saved {out}: {info.content_type} {info.width}x{info.height}, "
            f"{out.stat().st_size} bytes ({args.rendition})"
        )
    return 0


# --- watches (server streams) -----------------------------------------------------------


def run_watch(
    stream: Iterable[M],
    view: WatchView[M],
    *,
    live: bool,
    max_messages: int | None = None,
    out: TextIO | None = None,
    console: Console | None = None,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> int:
    """Consume a server stream until it ends, `max_messages` arrived or Ctrl-C (exit 0).

    Live mode renders `view` at 4 Hz from rich's refresh thread (a lock keeps it from
    reading half-applied state), so a burst of updates costs one render, not one each.
    Otherwise every message is printed as one JSON line, flushed, for pipes and tests.
    gRPC errors propagate to main, which prints them.
    """
    count = 0
    try:
        if live:
            lock = threading.Lock()

            def render() -> RenderableType:
                with lock:
                    return view.render()

            with Live(
                get_renderable=render,
                console=console or _console(),
                refresh_per_second=4,
                redirect_stderr=False,
            ):
                for msg in stream:
                    with lock:
                        view.apply(msg, now())
                    count += 1
                    if max_messages and count >= max_messages:
                        break
        else:
            sink = out or sys.stdout
            for msg in stream:
                sink.write(views.json_line(msg) + "\n")
                sink.flush()
                count += 1
                if max_messages and count >= max_messages:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        cancel = getattr(stream, "cancel", None)
        if callable(cancel):
            cancel()  # stop the server-side stream at once instead of at channel close
    return 0


def cmd_watch_post(args: argparse.Namespace, client: Client) -> int:
    post_ids = list(dict.fromkeys(args.post_ids))
    with client.queries() as stub:
        call = stub.WatchPosts(qry.WatchPostsRequest(post_ids=post_ids), metadata=client.metadata)
        return run_watch(
            call, views.PostsView(post_ids), live=client.live(), max_messages=args.max_messages
        )


def cmd_watch_feed(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:
        call = stub.WatchFeed(
            # Ask for as many posts as the view shows, so it starts full.
            qry.WatchFeedRequest(author_id=args.author or "", snapshot_size=views.FEED_MAX_ROWS),
            metadata=client.metadata,
        )
        return run_watch(call, views.FeedView(), live=client.live(), max_messages=args.max_messages)


def cmd_watch_trending(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:
        call = stub.WatchTrending(
            qry.WatchTrendingRequest(limit=args.limit), metadata=client.metadata
        )
        return run_watch(
            call, views.TrendingView(), live=client.live(), max_messages=args.max_messages
        )


# --- argument parsing -------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_client_options(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """Options accepted before the subcommand and after it (`mysocial like X --user bob`).

    On subcommands their defaults are SUPPRESS so an absent option does not overwrite a
    value given before the subcommand; unset values are resolved in make_client.
    """
    unset = argparse.SUPPRESS if on_subcommand else None
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--user",
        dest="user_name",
        metavar="NAME",
        default=unset,
        help=f"act as this user (default: ${USER_ENV}, else {DEFAULT_USER})",
    )
    group.add_argument(
        "--command-addr",
        metavar="HOST:PORT",
        default=unset,
        help="command service (default: $MYSOCIAL_COMMAND_ADDR, else 127.0.0.1:50051)",
    )
    group.add_argument(
        "--query-addr",
        metavar="HOST:PORT",
        default=unset,
        help="query service (default: $MYSOCIAL_QUERY_ADDR, else 127.0.0.1:50052)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if on_subcommand else False,
        help="print raw responses as JSON (watches: one JSON line per message)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mysocial", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_client_options(parser, on_subcommand=False)
    parser.set_defaults(remote=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_client_options(common, on_subcommand=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def remote(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        func: Callable[[argparse.Namespace, Client], int],
        help_text: str,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func, remote=True)
        return p

    p = sub.add_parser("token", help="mint a development bearer token for a user")
    p.add_argument("user")
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("settings", help="list every setting with its default")
    p.set_defaults(func=cmd_settings)
    p = sub.add_parser(
        "loadgen",
        help="launch-day load: an open-loop mix of commands at a target rate",
        description=loadgen.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (all workers)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds")
    p.add_argument("--workers", type=int, default=2, help="client processes")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--only", choices=sorted(loadgen.MIX), help="send only this command")
    p.add_argument("--command-addr", metavar="HOST:PORT", help="default: MYSOCIAL_COMMAND_ADDR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_loadgen)

    p = remote(sub, "post", cmd_post, "create a post, optionally with images")
    p.add_argument("caption")
    p.add_argument("--request-id", metavar="R", help="idempotency key: a retry is counted once")
    p.add_argument(
        "--image",
        metavar="FILE",
        nargs="+",
        action="extend",
        help="upload these images and attach them (repeatable)",
    )
    p = remote(sub, "like", cmd_like, "like a post")
    p.add_argument("post_id")
    p = remote(sub, "unlike", cmd_unlike, "withdraw a like")
    p.add_argument("post_id")
    p = remote(sub, "comment", cmd_comment, "comment on a post")
    p.add_argument("post_id")
    p.add_argument("text")
    p = remote(sub, "uncomment", cmd_uncomment, "delete a comment")
    p.add_argument("post_id")
    p.add_argument("comment_id")
    p = remote(sub, "delete", cmd_delete, "delete one of your posts")
    p.add_argument("post_id")

    p = remote(sub, "get", cmd_get, "show one post with its counts")
    p.add_argument("post_id")
    p = remote(sub, "list", cmd_list, "list posts, newest first")
    p.add_argument("--author", metavar="A", help="only posts by this user")
    p.add_argument(
        "--page-size", metavar="N", type=_non_negative_int, default=0, help="0 = server default"
    )
    p.add_argument("--page-token", metavar="T", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="follow every page")
    p = remote(sub, "comments", cmd_comments, "list a post's comments, newest first")
    p.add_argument("post_id")
    p.add_argument(
        "--page-size", metavar="N", type=_non_negative_int, default=0, help="0 = server default"
    )
    p.add_argument("--page-token", metavar="T", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="follow every page")
    p = remote(sub, "trending", cmd_trending, "show the trending ranking")
    p.add_argument(
        "--limit", metavar="N", type=_non_negative_int, default=0, help="0 = every entry"
    )
    p = remote(sub, "image", cmd_image, "download an image to a file")
    p.add_argument("media_id")
    p.add_argument("out_file")
    p.add_argument("--rendition", choices=list(RENDITIONS), default="original")

    watch = sub.add_parser("watch", help="live views: post, feed, trending")
    watch_sub = watch.add_subparsers(dest="watch_what", required=True, metavar="WHAT")
    watches = [
        remote(watch_sub, "post", cmd_watch_post, "follow the counts of posts live"),
        remote(watch_sub, "feed", cmd_watch_feed, "follow the newest posts live"),
        remote(watch_sub, "trending", cmd_watch_trending, "follow the trending ranking live"),
    ]
    watches[0].add_argument("post_ids", metavar="POST_ID", nargs="+")
    watches[1].add_argument("--author", metavar="A", help="only posts by this user")
    watches[2].add_argument(
        "--limit", metavar="N", type=_non_negative_int, default=0, help="0 = every entry"
    )
    for p in watches:
        p.add_argument(
            "--max-messages",
            metavar="N",
            type=_positive_int,
            default=None,
            help="stop after N streamed messages",
        )
    return parser


def _silence_stdout() -> None:
    """After a closed pipe (`mysocial watch feed | head`), stop Python's exit-time flush
    from reporting the broken pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.remote:
            return int(args.func(args, make_client(args, settings, os.environ)))
        return int(args.func(args, settings))
    except grpc.RpcError as exc:
        print(views.format_rpc_error(exc), file=sys.stderr)
        return 1
    except (CliError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
