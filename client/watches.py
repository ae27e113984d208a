"""Watches: `watch post`, `watch feed`, `watch trending` follow a server stream, shown as
a live view on a terminal or as one JSON line per message otherwise (`run_watch`)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Protocol, TextIO, TypeVar

import grpc
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.live import Live

from client import views
from client.session import Client
from client.session import console as default_console
from mysocial.v1 import query_service_pb2 as qry

M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)

# A watch whose service is unavailable (restarting, still loading) reconnects for this
# long, backing off from RECONNECT_FIRST_S to RECONNECT_MAX_S between attempts.
RECONNECT_FOR_S = 60.0
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 2.0
RECONNECTING = "reconnecting…"


class WatchView(Protocol[M_contra]):
    """What run_watch needs from a live view (see client.views)."""

    note: str  # shown in the footer: run_watch says when it is reconnecting

    def apply(self, msg: M_contra, now: datetime) -> None: ...

    def render(self) -> RenderableType: ...


def _unavailable(error: grpc.RpcError) -> bool:
    try:
        return bool(error.code() == grpc.StatusCode.UNAVAILABLE)
    except Exception:  # no status yet: not a server's answer
        return False


def _cancel(stream: object) -> None:
    cancel = getattr(stream, "cancel", None)
    if callable(cancel):
        cancel()  # stop the server-side stream at once instead of at channel close


class _Resuming(Iterable[M]):
    """The messages of a stream, reopened while the service is UNAVAILABLE (restarted,
    loading). Each new stream starts with a snapshot; the views drop states older
    than what they show (versions), so counts never jump back."""

    def __init__(
        self,
        first: Iterable[M],
        reopen: Callable[[], Iterable[M]] | None,
        view: WatchView[M],
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.current = first
        self.reopen = reopen
        self.view = view
        self.sleep = sleep
        self.clock = clock

    def __iter__(self) -> Iterator[M]:
        down_since: float | None = None
        delay = RECONNECT_FIRST_S
        while True:
            try:
                for msg in self.current:
                    if down_since is not None:
                        down_since, delay, self.view.note = None, RECONNECT_FIRST_S, ""
                    yield msg
                return
            except grpc.RpcError as exc:
                if self.reopen is None or not _unavailable(exc):
                    raise
                now = self.clock()
                down_since = now if down_since is None else down_since
                if now - down_since > RECONNECT_FOR_S:
                    raise
                self.view.note = RECONNECTING
                _cancel(self.current)
                self.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                self.current = self.reopen()


def run_watch(
    stream: Iterable[M],
    view: WatchView[M],
    *,
    live: bool,
    max_messages: int | None = None,
    out: TextIO | None = None,
    console: Console | None = None,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    reopen: Callable[[], Iterable[M]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Consume a server stream until it ends, `max_messages` arrived or Ctrl-C (exit 0).

    Live mode renders `view` at 4 Hz from rich's refresh thread (a lock keeps it from
    reading half-applied state), so a burst of updates costs one render, not one each.
    Otherwise every message is printed as one JSON line, flushed, for pipes and tests
    (each carries its version: a reader that reconnects can drop older states).
    With `reopen`, a stream that fails UNAVAILABLE is opened again (for up to
    RECONNECT_FOR_S without a message). Other gRPC errors propagate to main, which
    prints them.
    """
    count = 0
    messages = _Resuming(stream, reopen, view, sleep, clock)
    try:
        if live:
            lock = threading.Lock()

            def render() -> RenderableType:
                with lock:
                    return view.render()

            with Live(
                get_renderable=render,
                console=console or default_console(),
                refresh_per_second=4,
                redirect_stderr=False,
            ):
                for msg in messages:
                    with lock:
                        view.apply(msg, now())
                    count += 1
                    if max_messages and count >= max_messages:
                        break
        else:
            sink = out or sys.stdout
            for msg in messages:
                sink.write(views.json_line(msg) + "\n")
                sink.flush()
                count += 1
                if max_messages and count >= max_messages:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        _cancel(messages.current)
    return 0


def cmd_watch_post(args: argparse.Namespace, client: Client) -> int:
    post_ids = list(dict.fromkeys(args.post_ids))
    with client.queries() as stub:

        def open_stream() -> Iterable[qry.WatchPostsResponse]:
            request = qry.WatchPostsRequest(post_ids=post_ids)
            return stub.WatchPosts(request, metadata=client.metadata)

        return run_watch(
            open_stream(),
            views.PostsView(post_ids),
            live=client.live(),
            max_messages=args.max_messages,
            reopen=open_stream,
        )


def cmd_watch_feed(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:

        def open_stream() -> Iterable[qry.WatchFeedResponse]:
            # Ask for as many posts as the view shows, so it starts full.
            request = qry.WatchFeedRequest(
                author_id=args.author or "", snapshot_size=views.FEED_MAX_ROWS
            )
            return stub.WatchFeed(request, metadata=client.metadata)

        return run_watch(
            open_stream(),
            views.FeedView(),
            live=client.live(),
            max_messages=args.max_messages,
            reopen=open_stream,
        )


def cmd_watch_trending(args: argparse.Namespace, client: Client) -> int:
    with client.queries() as stub:

        def open_stream() -> Iterable[qry.WatchTrendingResponse]:
            request = qry.WatchTrendingRequest(limit=args.limit)
            return stub.WatchTrending(request, metadata=client.metadata)

        return run_watch(
            open_stream(),
            views.TrendingView(),
            live=client.live(),
            max_messages=args.max_messages,
            reopen=open_stream,
        )
