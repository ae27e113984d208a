"""Rendering for the `mysocial` CLI: protobuf messages in, rich renderables out.

Everything here is free of I/O and of gRPC calls so the tables and live views can be
unit-tested without a server. The live views are small state holders: the CLI feeds
them streamed messages (`apply`) and rich asks them for a fresh table (`render`).
User-supplied text (captions, comments, ids) always goes into `Text` objects, never
into markup strings, so a caption like "[bold]" is shown as typed.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mysocial.v1 import query_service_pb2 as qry
from mysocial.v1 import resources_pb2 as res

# The feed view shows at most this many posts: enough to fill a terminal, and a
# bounded memory footprint however long the stream runs.
FEED_MAX_ROWS = 30
SHORT_ID_LEN = 8
CAPTION_WIDTH = 60

_FEED_MARKS = {
    qry.FEED_EVENT_KIND_SNAPSHOT: "",
    qry.FEED_EVENT_KIND_CREATED: "created",
    qry.FEED_EVENT_KIND_UPDATED: "updated",
    qry.FEED_EVENT_KIND_DELETED: "deleted",
}
_MARK_STYLES = {"created": "green", "updated": "yellow", "deleted": "red"}


# --- small formatting helpers ---------------------------------------------------------


def short_id(value: str, length: int = SHORT_ID_LEN) -> str:
    """The first characters of an id: enough to tell rows apart in a live view."""
    return value[:length]


def cell(text: str) -> Text:
    """A one-line cell: user text shown literally (no markup), cut with … when narrow.

    Columns holding these stay wrappable so rich narrows them first, before the ids."""
    return Text(text, no_wrap=True, overflow="ellipsis")


def one_line(text: str, limit: int = CAPTION_WIDTH) -> str:
    """Collapse whitespace (captions may hold newlines) and cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)] + "…"


def format_score(score: float) -> str:
    """A score with 3 significant digits and no exponent (12345.6 -> "12300")."""
    if not math.isfinite(score):
        return str(score)
    if score == 0:
        return "0"
    rounded = float(f"{score:.3g}")
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def timestamp_to_datetime(ts: Timestamp) -> datetime | None:
    """The instant as an aware local datetime; None when the field is unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC).astimezone()


def format_timestamp(ts: Timestamp, *, seconds: bool = True) -> str:
    """Local date and time (people read their own clock); "" if unset."""
    when = timestamp_to_datetime(ts)
    if when is None:
        return ""
    return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_clock(when: datetime | None) -> str:
    """Time of day of a local event (last update), "" when there was none."""
    return "" if when is None else when.astimezone().strftime("%H:%M:%S")


def json_line(message: Message) -> str:
    """One streamed message as a single JSON line (proto field names), for pipes and tests."""
    return MessageToJson(message, preserving_proto_field_name=True, indent=None)


def json_document(message: Message) -> str:
    """A unary response as indented JSON (proto field names)."""
    return MessageToJson(message, preserving_proto_field_name=True)


def format_rpc_error(error: grpc.RpcError) -> str:
    """`error: <STATUS_NAME>: <details>`: the one line a failed call prints to stderr.

    Errors raised before a call has a status (or by test doubles) may lack code() or
    details(); they are reported as UNKNOWN rather than crashing the error path.
    """
    try:
        code: grpc.StatusCode | None = error.code()
    except Exception:
        code = None
    try:
        details = error.details()
    except Exception:
        details = None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    text = (details or "").strip() or str(error).strip()
    return f"error: {name}: {text}" if text else f"error: {name}"


# --- static tables (unary reads) -------------------------------------------------------


def post_detail_table(post: res.Post) -> Table:
    """One post as a two-column field/value table (`mysocial get`)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("post", Text(post.post_id))
    table.add_row("author", Text(post.author_id))
    table.add_row("created", format_timestamp(post.created_at))
    table.add_row("likes", str(post.like_count))
    table.add_row("comments", str(post.comment_count))
    table.add_row("caption", Text(post.caption))
    for i, media_id in enumerate(post.media_ids):
        extra = ""
        if i < len(post.media):
            m = post.media[i]
            extra = f" ({m.content_type}, {m.width}x{m.height})"
        table.add_row("media" if i == 0 else "", Text(media_id + extra))
    return table


def posts_table(posts: Sequence[res.Post], *, title: str | None = None) -> Table:
    """Posts with full ids (to copy into `like`/`comment`), one line each, in the order
    given (newest first). Fits 80 columns: `get` shows the rest of a post."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("post", no_wrap=True)
    table.add_column("author", max_width=16)
    table.add_column("likes", justify="right")
    table.add_column("comments", justify="right")
    table.add_column("caption")
    for p in posts:
        table.add_row(
            Text(p.post_id),
            cell(p.author_id),
            str(p.like_count),
            str(p.comment_count),
            cell(one_line(p.caption)),
        )
    return table


def comments_table(comments: Sequence[res.Comment], *, title: str | None = None) -> Table:
    """Comments with full ids (to copy into `uncomment`), one line each."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("comment", no_wrap=True)
    table.add_column("author", max_width=16)
    table.add_column("created", no_wrap=True)
    table.add_column("text")
    for c in comments:
        table.add_row(
            Text(c.comment_id),
            cell(c.author_id),
            format_timestamp(c.created_at, seconds=False),
            cell(one_line(c.text, 200)),
        )
    return table


def trending_table(
    entries: Iterable[res.TrendingEntry], *, short: bool = False, title: str | None = None
) -> Table:
    """The ranking: rank, post, author, score (3 significant digits), likes, comments.

    `short` trims post ids for the live view; `mysocial trending` prints them whole.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("#", justify="right")
    table.add_column("post", no_wrap=True)
    table.add_column("author", max_width=16)
    table.add_column("score", justify="right")
    table.add_column("likes", justify="right")
    table.add_column("comments", justify="right")
    for e in entries:
        table.add_row(
            str(e.rank),
            Text(short_id(e.post_id) if short else e.post_id),
            cell(e.author_id),
            format_score(e.score),
            str(e.like_count),
            str(e.comment_count),
        )
    return table


class Versions:
    """The highest version shown per post (the newest `limit` posts), so a view drops
    a state older than one it already shows. After a reconnect, perhaps to another
    query-service instance a little behind, the snapshot may predate the last update
    the view got; without this, counts would jump back. A deletion is final."""

    DELETED = sys.maxsize

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.shown: OrderedDict[str, int] = OrderedDict()
        self.stale = 0  # messages dropped as older than what was shown

    def fresh(self, post_id: str, version: int, deleted: bool = False) -> bool:
        """Whether to show this state of post_id (and remember it). Version 0 (a server
        that sends none) is always shown."""
        shown = self.shown.get(post_id, 0)
        if shown == self.DELETED or (version and version < shown):
            self.stale += 1
            return False
        if deleted or version:
            self.shown[post_id] = self.DELETED if deleted else version
            self.shown.move_to_end(post_id)
            if len(self.shown) > self.limit:
                self.shown.popitem(last=False)
        return True


def footer(updates: int, skipped: int, last_update: datetime | None, note: str = "") -> Text:
    """Status line under a live view: how many updates arrived and how many the server
    coalesced away because this reader was slower than the updates."""
    parts = [f"{updates} update{'s' if updates != 1 else ''} received"]
    if skipped:
        parts.append(f"{skipped} skipped by server (slow reader)")
    if last_update is not None:
        parts.append(f"last {format_clock(last_update)}")
    if note:
        parts.append(note)
    parts.append("Ctrl-C quits")
    return Text(" · ".join(parts), style="dim")


# --- live views (server streams) -------------------------------------------------------


@dataclass
class _PostRow:
    post: res.Post
    updated_at: datetime | None = None
    mark: str = ""
    seq: int = 0


class PostsView:
    """`watch post`: one row per watched post, in the order the user named them."""

    def __init__(self, post_ids: Sequence[str]) -> None:
        # dict keeps insertion order: rows stay where the user put them.
        self.rows: dict[str, _PostRow] = {pid: _PostRow(res.Post(post_id=pid)) for pid in post_ids}
        self.updates = 0
        self.skipped = 0
        self.last_update: datetime | None = None
        self.versions = Versions(max(len(post_ids), 1))
        self.note = ""  # set by run_watch while it reconnects

    def apply(self, msg: qry.WatchPostsResponse, now: datetime) -> None:
        """Take one streamed state; a deletion keeps the last known data, marked; a
        state older than the one shown is dropped."""
        self.updates += 1
        self.skipped += msg.skipped_updates
        self.last_update = now
        pid = msg.post.post_id
        if not self.versions.fresh(pid, msg.version, msg.deleted):
            return
        row = self.rows.setdefault(pid, _PostRow(res.Post(post_id=pid)))
        row.updated_at = now
        if msg.deleted:
            row.mark = "deleted"
        else:
            row.post = msg.post

    def render(self) -> RenderableType:
        """A fresh table of the current state (called by rich's refresh thread)."""
        table = Table(title="Watched posts")
        table.add_column("post", no_wrap=True)
        table.add_column("author", max_width=16)
        table.add_column("caption", max_width=CAPTION_WIDTH)
        table.add_column("likes", justify="right")
        table.add_column("comments", justify="right")
        table.add_column("updated", no_wrap=True)
        for pid, row in self.rows.items():
            deleted = row.mark == "deleted"
            waiting = row.updated_at is None
            table.add_row(
                Text(short_id(pid)),
                cell(row.post.author_id),
                cell("(deleted)" if deleted else "…" if waiting else one_line(row.post.caption)),
                "" if waiting else str(row.post.like_count),
                "" if waiting else str(row.post.comment_count),
                format_clock(row.updated_at),
                style="dim strike" if deleted else None,
            )
        return Group(table, footer(self.updates, self.skipped, self.last_update, self.note))


class FeedView:
    """`watch feed`: the newest posts (snapshot, then live), at most FEED_MAX_ROWS rows."""

    def __init__(self, max_rows: int = FEED_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.rows: dict[str, _PostRow] = {}
        self.updates = 0
        self.skipped = 0
        self.last_update: datetime | None = None
        self.snapshot_complete = False
        self._seq = 0
        self.versions = Versions()
        self.note = ""  # set by run_watch while it reconnects

    def apply(self, msg: qry.WatchFeedResponse, now: datetime) -> None:
        """Take one feed change (unless older than what is shown), then drop the oldest
        rows beyond max_rows."""
        self.updates += 1
        self.skipped += msg.skipped_updates
        self.last_update = now
        if msg.snapshot_complete:
            self.snapshot_complete = True
        pid = msg.post.post_id
        if not msg.HasField("post") or not pid:
            return  # e.g. the snapshot_complete marker of an empty snapshot
        if not self.versions.fresh(pid, msg.version, msg.kind == qry.FEED_EVENT_KIND_DELETED):
            return
        mark = _FEED_MARKS.get(msg.kind, "")
        row = self.rows.get(pid)
        if msg.kind == qry.FEED_EVENT_KIND_DELETED:
            if row is not None:  # only post_id is set: keep what we knew, marked
                row.mark = mark
                row.updated_at = now
            return
        self._seq += 1
        if row is None:
            self.rows[pid] = _PostRow(msg.post, now, mark, self._seq)
        else:
            row.post, row.mark, row.updated_at = msg.post, mark, now
        self._trim()

    def _trim(self) -> None:
        if len(self.rows) <= self.max_rows:
            return
        keep = self.ordered()[: self.max_rows]
        self.rows = {r.post.post_id: r for r in keep}

    def ordered(self) -> list[_PostRow]:
        """Rows newest first by creation time (arrival order breaks ties)."""
        return sorted(
            self.rows.values(),
            key=lambda r: (r.post.created_at.seconds, r.post.created_at.nanos, r.seq),
            reverse=True,
        )

    def render(self) -> RenderableType:
        """A fresh table of the feed, newest first, with created/updated/deleted marks."""
        table = Table(title="Feed")
        table.add_column("", no_wrap=True)
        table.add_column("post", no_wrap=True)
        table.add_column("author", max_width=16)
        table.add_column("caption", max_width=CAPTION_WIDTH)
        table.add_column("likes", justify="right")
        table.add_column("comments", justify="right")
        table.add_column("updated", no_wrap=True)
        for row in self.ordered():
            p = row.post
            table.add_row(
                Text(row.mark, style=_MARK_STYLES.get(row.mark, "")),
                Text(short_id(p.post_id)),
                cell(p.author_id),
                cell(one_line(p.caption)),
                str(p.like_count),
                str(p.comment_count),
                format_clock(row.updated_at),
                style="dim strike" if row.mark == "deleted" else None,
            )
        note = self.note or ("" if self.snapshot_complete else "loading snapshot…")
        return Group(table, footer(self.updates, self.skipped, self.last_update, note))


class TrendingView:
    """`watch trending`: always the latest ranking the server sent."""

    def __init__(self) -> None:
        self.ranking = qry.WatchTrendingResponse()
        self.updates = 0
        self.skipped = 0
        self.last_update: datetime | None = None
        self.note = ""  # set by run_watch while it reconnects

    def apply(self, msg: qry.WatchTrendingResponse, now: datetime) -> None:
        """Replace the ranking: each message is a whole ranking, not a delta."""
        self.updates += 1
        self.skipped += msg.skipped_updates
        self.last_update = now
        self.ranking = msg

    def render(self) -> RenderableType:
        """The ranked table, titled with the instant its scores were evaluated at."""
        computed = timestamp_to_datetime(self.ranking.computed_at)
        title = "Trending" + (f" (computed {format_clock(computed)})" if computed else "")
        table = trending_table(self.ranking.entries, short=True, title=title)
        parts: list[RenderableType] = [table]
        if self.updates and not self.ranking.entries:
            parts.append(Text("no trending posts yet", style="italic"))
        parts.append(footer(self.updates, self.skipped, self.last_update, self.note))
        return Group(*parts)
