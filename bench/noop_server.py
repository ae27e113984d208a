"""No-op gRPC servers: the raw baselines B1 (unary) and T3's streaming baseline.

B1 answers LikePost (and AddComment) with the real response types, immediately, in
the same number of grpc.aio worker processes sharing the port (SO_REUSEPORT) as the
command service. The streaming server sends a fixed WatchFeed message to every
subscriber as fast as gRPC lets it.

    python -m bench.noop_server unary HOST:PORT WORKERS
    python -m bench.noop_server stream HOST:PORT
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from mysocial.rpc import SERVER_OPTIONS
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from mysocial.v1 import resources_pb2 as res


class NoopCommands(cmd_grpc.CommandServiceServicer):
    async def LikePost(self, request: cmd.LikePostRequest, context: Any) -> cmd.LikePostResponse:
        return cmd.LikePostResponse(post_id=request.post_id, consistency_token="t")

    async def AddComment(
        self, request: cmd.AddCommentRequest, context: Any
    ) -> cmd.AddCommentResponse:
        return cmd.AddCommentResponse(
            post_id=request.post_id, comment_id=request.post_id, consistency_token="t"
        )


class NoopFeed(q_grpc.QueryServiceServicer):
    """Streams one pre-built update over and over: the cost of delivery alone."""

    MESSAGE = q.WatchFeedResponse(
        kind=q.FEED_EVENT_KIND_UPDATED,
        post=res.Post(
            post_id="0" * 36,
            author_id="author",
            caption="benchmark post",
            like_count=1234,
            comment_count=56,
        ),
    )

    async def WatchFeed(
        self, request: q.WatchFeedRequest, context: Any
    ) -> AsyncIterator[q.WatchFeedResponse]:
        while True:
            yield self.MESSAGE


async def _serve(kind: str, addr: str) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    if kind == "unary":
        cmd_grpc.add_CommandServiceServicer_to_server(NoopCommands(), server)  # type: ignore[abstract]
        names = [cmd.DESCRIPTOR.services_by_name["CommandService"].full_name]
    else:
        q_grpc.add_QueryServiceServicer_to_server(NoopFeed(), server)  # type: ignore[abstract]
        names = [q.DESCRIPTOR.services_by_name["QueryService"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    server.add_insecure_port(addr)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def _worker(kind: str, addr: str) -> None:
    asyncio.run(_serve(kind, addr))


def main() -> None:
    kind, addr = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(kind, addr)) for _ in range(workers)]
    for p in procs:
        p.start()

    def stop(*_: Any) -> None:
        for p in procs:
            if p.pid:
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
