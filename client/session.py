"""Who acts and where: the `Client` every remote command is given, and local failures.

`make_client` resolves the global options (flag, then environment, then settings) and
mints the acting user's development token, so trying the system needs no login step;
against a deployment whose secret it does not hold, `--token` (or MYSOCIAL_TOKEN) gives
the bearer token to send instead, and `--cacert` the CA its TLS certificate is from.
A `CliError` is a local failure (bad file, bad user id); main prints it as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from google.protobuf.message import Message
from rich.console import Console

from client import views
from mysocial.auth import mint_token
from mysocial.config import Settings, split_addr
from mysocial.status import error_details
from mysocial.tls import channel, channel_credentials
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2_grpc as qry_grpc

DEFAULT_USER = "demo"
USER_ENV = "MYSOCIAL_USER"
TOKEN_ENV = "MYSOCIAL_TOKEN"
UNARY_TIMEOUT_S = 10.0
# Uploads and downloads move bytes over possibly slow links: more than a unary call.
TRANSFER_TIMEOUT_S = 300.0


RETRY_ATTEMPTS = 3  # after the first call
RETRY_WAIT_MAX_S = 30.0  # a longer RetryInfo is reported, not waited for
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def retrying(
    method: Callable[..., Any],
    request: Any,
    metadata: tuple[tuple[str, str], ...],
    timeout: float = UNARY_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call a command; when refused with RetryInfo (quota, overload, Kafka away) wait
    as told and call again, up to RETRY_ATTEMPTS times. The request gets a request_id
    first if it has none, so a retry of a call that did go through counts once."""
    if "request_id" in request.DESCRIPTOR.fields_by_name and not request.request_id:
        request.request_id = uuid.uuid4().hex
    for attempt in range(RETRY_ATTEMPTS + 1):
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            delay = error_details(exc).retry_after_s
            if (
                attempt == RETRY_ATTEMPTS
                or exc.code() not in RETRYABLE
                or delay is None
                or delay > RETRY_WAIT_MAX_S
            ):
                raise
            print(
                f"{exc.code().name}: {exc.details()}; retrying in {delay:g} s",
                file=sys.stderr,
            )
            sleep(delay)
    raise AssertionError("unreachable")


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
    credentials: grpc.ChannelCredentials | None = None  # None: plaintext

    @contextlib.contextmanager
    def commands(self) -> Iterator[cmd_grpc.CommandServiceStub]:
        with channel(self.command_addr, self.credentials) as ch:
            yield cmd_grpc.CommandServiceStub(ch)

    @contextlib.contextmanager
    def queries(self) -> Iterator[qry_grpc.QueryServiceStub]:
        with channel(self.query_addr, self.credentials) as ch:
            yield qry_grpc.QueryServiceStub(ch)

    def live(self) -> bool:
        """Live views only make sense on a terminal; pipes and --json get JSON lines."""
        return not self.json and sys.stdout.isatty()

    def emit(self, message: Message, human: str) -> None:
        """Print a unary response: raw JSON with --json, else the one-line summary."""
        print(views.json_document(message) if self.json else human)


def make_client(args: argparse.Namespace, settings: Settings, env: Mapping[str, str]) -> Client:
    """Resolve the global options (flag, then environment, then settings); without a
    token given, mint the acting user's token locally, so trying the system needs no
    login step."""
    command_addr = args.command_addr or settings.command_addr
    query_addr = args.query_addr or settings.query_addr
    split_addr(command_addr, "--command-addr")
    split_addr(query_addr, "--query-addr")
    token = getattr(args, "token", None) or env.get(TOKEN_ENV)
    if token:
        user = _subject(token)
    else:
        user = args.user_name or env.get(USER_ENV) or DEFAULT_USER
        try:
            token = mint_token(user, settings.effective_jwt_secret, settings.token_ttl_s)
        except ValueError:
            raise CliError(
                f"invalid user {user!r}: 1-64 letters, digits, _ . @ - "
                "(not starting with one of _.@-)"
            ) from None
    return Client(
        user=user,
        command_addr=command_addr,
        query_addr=query_addr,
        json=bool(args.json),
        metadata=(("authorization", f"Bearer {token}"),),
        credentials=_credentials(args),
    )


def _subject(token: str) -> str:
    """Who a given token says acts (unverified: only the service holds the secret)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise CliError("--token / $MYSOCIAL_TOKEN is not a JWT") from None
    return str(claims.get("sub", ""))


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """--cacert FILE or --tls: TLS; --plaintext (the default): none."""
    cacert, tls = getattr(args, "cacert", None), getattr(args, "tls", False)
    if getattr(args, "plaintext", False) and (cacert or tls):
        raise CliError("--plaintext contradicts --cacert / --tls")
    if not (cacert or tls):
        return None
    try:
        return channel_credentials(cacert)
    except OSError as exc:
        raise CliError(f"--cacert {cacert}: {exc.strerror}") from None


def console() -> Console:
    """The console tables and live views print to."""
    return Console(highlight=False)
