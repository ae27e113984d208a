"""Who acts and where: the `Client` every remote command is given, and local failures.

`make_client` resolves the global options (flag, then environment, then settings) and
mints the acting user's development token, so trying the system needs no login step.
A `CliError` is a local failure (bad file, bad user id); main prints it as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from rich.console import Console

from client import views
from mysocial.auth import mint_token
from mysocial.config import Settings, split_addr
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2_grpc as qry_grpc

DEFAULT_USER = "demo"
USER_ENV = "MYSOCIAL_USER"
UNARY_TIMEOUT_S = 10.0
# Uploads and downloads move bytes over possibly slow links: more than a unary call.
TRANSFER_TIMEOUT_S = 300.0


class CliError(Exception):
    """A local failure (bad file, bad user id): printed as `error: <message>`, exit 1."""


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


def console() -> Console:
    """The console tables and live views print to."""
    return Console(highlight=False)
