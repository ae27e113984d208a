"""Watches: `watch post`, `watch feed`, `watch trending` follow a server stream, shown as
a live view on a terminal or as one JSON line per message otherwise (`run_watch`)."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol, TextIO, TypeVar

from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.live import Live

from client import views
from client.session import Client
from client.session import console as default_console
from mysocial.v1 import query_service_pb2 as qry

M = TypeVar("M", bound=Message)
M_contra = TypeVar("M_contra", bound=Message, contravariant=True)


class WatchView(Protocol[M_contra]):
    """What run_watch needs from a live view (see client.views)."""

    def apply(self, msg: M_contra, now: datetime) -> None: ...

    def render(self) -> RenderableType: ...


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
                console=console or default_console(),
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
