"""Query service process: gRPC server + read models fed from Kafka.

Health is NOT_SERVING until the read models have caught up with the topics as they
were at start, SERVING after. SIGTERM: NOT_SERVING, stop accepting, let unary calls
finish and close streams, stop the Kafka reader, flush and close the local store. If
the Kafka reader dies, the same shutdown follows and the process exits 1, for its
supervisor (make run) to restart it. A replica whose store folder another process
holds exits 2 at once (query_state_locked).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from media.library import MediaLibrary
from mysocial import log as logconf
from mysocial import otel
from mysocial.config import Settings
from mysocial.process import tune_gc
from mysocial.rocks import StateLocked
from mysocial.rpc import RunningServer, run_until_stopped, start_server
from mysocial.startup import kafka_or_exit, metrics_or_exit, settings_or_exit
from mysocial.tls import server_credentials
from mysocial.v1 import query_service_pb2
from query_service.service import ReadSide
from query_service.servicer import QueryServicer, register
from query_service.stream_limits import StreamLimits

log = logconf.get_logger("query.server")

SERVICE_NAME = query_service_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name


@dataclass
class QueryServer:
    running: RunningServer
    read_side: ReadSide
    settings: Settings

    @property
    def port(self) -> int:
        return self.running.port

    @classmethod
    async def start(cls, settings: Settings, addr: str | None = None) -> QueryServer:
        """Start serving (NOT_SERVING until the read models are loaded)."""
        read_side = ReadSide(settings)
        media = await asyncio.to_thread(MediaLibrary.from_settings, settings)
        limits = StreamLimits(
            settings.query_max_streams,
            settings.query_max_streams_per_user,
            settings.query_max_streams_per_address,
            settings.effective_jwt_secret,
        )
        servicer = QueryServicer(read_side, media, limits)
        running = await start_server(
            addr or settings.query_addr,
            lambda s: register(servicer, s),
            [SERVICE_NAME],
            serving=False,
            credentials=server_credentials(settings),
        )
        server = cls(running, read_side, settings)
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def serve() -> None:
            task = loop.create_task(running.set_serving([SERVICE_NAME], True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        read_side.on_ready.append(serve)
        read_side.start()
        log.info("query_service_listening", port=running.port, pid=os.getpid())
        return server

    async def serve(self) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or the Kafka reader dies (1)."""
        return await run_until_stopped(self.stop, self.read_side.failure)

    async def stop(self, grace: float | None = None) -> None:
        await self.running.set_serving([SERVICE_NAME], False)
        await self.running.server.stop(self.settings.grace_period_s if grace is None else grace)
        await self.read_side.close()
        log.info("query_service_stopped")


async def _main(settings: Settings) -> int:
    try:
        server = await QueryServer.start(settings)
    except StateLocked as exc:
        log.error("query_state_locked", error=str(exc))
        return 2
    tune_gc()
    return await server.serve()


def main() -> None:
    settings = settings_or_exit("query_service")
    kafka_or_exit(settings)
    served = metrics_or_exit(settings, "query")
    otel.configure(settings.otlp_endpoint, "mysocial-query")
    code = asyncio.run(_main(settings))
    otel.shutdown()
    if served is not None:
        served.close()
    sys.exit(code)
