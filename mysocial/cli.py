"""`mysocial`: the command-line client for people trying the system.

mysocial token alice              # print a development bearer token for alice
mysocial settings                 # every setting with its default
"""

from __future__ import annotations

import argparse
import sys

from mysocial.auth import mint_token
from mysocial.config import Settings, documented_settings


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    ttl = args.ttl if args.ttl is not None else settings.token_ttl_s
    print(mint_token(args.user, settings.effective_jwt_secret, ttl))
    return 0


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    for s in documented_settings():
        print(f"{s.env}={s.default!s}\n    {s.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mysocial", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("token", help="mint a development bearer token for a user")
    p.add_argument("user")
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("settings", help="list every setting with its default")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
