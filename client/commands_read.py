"""Read-side subcommands: get, list, comments, trending and image downloads. Each asks
the query service, then prints JSON (--json) or a table."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from client import views
from client.session import TRANSFER_TIMEOUT_S, UNARY_TIMEOUT_S, Client, CliError, console
from mysocial.v1 import query_service_pb2 as qry

RENDITIONS = {
    "original": qry.IMAGE_RENDITION_ORIGINAL,
    "feed": qry.IMAGE_RENDITION_FEED,
    "thumbnail": qry.IMAGE_RENDITION_THUMBNAIL,
}


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


P = TypeVar("P", bound=_Page)


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
        console().print(views.post_detail_table(resp.post))
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
        console().print(views.posts_table(merged.posts))
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
        console().print(views.comments_table(merged.comments))
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
        console().print(views.trending_table(resp.entries))
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
