"""`mysocial`: the command-line client for people trying the system.

  mysocial token alice                        print a development bearer token for alice
  mysocial settings                           every setting with its default
  mysocial --user alice post "first light"    create a post (--image FILE to attach images)
  mysocial --user bob like POST_ID            also: unlike, comment, uncomment, delete
  mysocial get POST_ID                        also: list [--all], comments POST_ID, trending
  mysocial image MEDIA_ID out.jpg             download an image (--rendition thumbnail)
  mysocial watch feed                         live views: watch post ID..., watch trending

Every call acts as --user (default $MYSOCIAL_USER, else "demo"): the CLI mints that
user's development token with MYSOCIAL_JWT_SECRET. Against a deployment whose secret you
do not hold, pass its token with --token (or $MYSOCIAL_TOKEN), and --cacert FILE when it
serves TLS with a certificate from that CA (--tls: the system's CAs; --plaintext: the
default). --json prints raw responses; watches print one JSON line per message when
stdout is not a terminal. Failures print `error: <STATUS>: <details>` and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence

import grpc

from client import loadgen, top, views
from client.commands_read import (
    RENDITIONS,
    cmd_comments,
    cmd_get,
    cmd_image,
    cmd_list,
    cmd_trending,
)
from client.commands_write import (
    cmd_comment,
    cmd_delete,
    cmd_like,
    cmd_post,
    cmd_uncomment,
    cmd_unlike,
)
from client.session import DEFAULT_USER, USER_ENV, Client, CliError, make_client
from client.watches import cmd_watch_feed, cmd_watch_post, cmd_watch_trending
from mysocial.auth import mint_token
from mysocial.config import ConfigError, Settings, documented_settings

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


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    urls = top.default_urls(args.host)
    for service in urls:
        given = getattr(args, f"{service}_metrics")
        if given:
            urls[service] = given
    return top.run(urls, once=args.once or args.json, as_json=args.json)


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    for s in documented_settings():
        print(f"{s.env}={s.default!s}\n    {s.doc}")
    return 0


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
        "--token",
        metavar="TOKEN",
        default=unset,
        help="send this bearer token instead of minting one for --user (default: $MYSOCIAL_TOKEN)",
    )
    group.add_argument(
        "--cacert",
        metavar="FILE",
        default=unset,
        help="TLS: the services' certificates are signed by the CA in FILE (PEM)",
    )
    flag = argparse.SUPPRESS if on_subcommand else False
    group.add_argument(
        "--tls", action="store_true", default=flag, help="TLS, trusting the system's CAs"
    )
    group.add_argument(
        "--plaintext", action="store_true", default=flag, help="no TLS (the default)"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=flag,
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
    p = sub.add_parser(
        "top",
        help="live view of the running system from its metrics",
        description=top.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="where the services run (default ports)")
    for service in ("command", "query", "processor"):
        p.add_argument(f"--{service}-metrics", metavar="URL", help=f"the {service}'s /metrics URL")
    p.add_argument("--once", action="store_true", help="print one frame (1 s of change) and exit")
    p.add_argument("--json", action="store_true", help="one frame as JSON")
    p.set_defaults(func=cmd_top)
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
