"""Command service process: one grpc.aio server per worker process, all on one port.

Workers share the listening port with SO_REUSEPORT so the kernel spreads connections
over the cores; each worker has its own producers. Health is NOT_SERVING until the
directory is loaded, then follows Kafka (mysocial.kafka.probe): NOT_SERVING while the
cluster does not answer, since every command would fail. SIGTERM: health goes
NOT_SERVING, the server stops accepting and drains in-flight calls, the producers are
flushed.

If a worker's directory reader dies, the worker shuts down the same way and exits 1:
with one worker the process exits 1 for its supervisor (make run) to restart it;
with several, the parent restarts that worker.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from prometheus_client.multiprocess import mark_process_dead

from command_service.directory import Directory
from command_service.publisher import Publisher
from command_service.quota import BucketTable, Quotas, SharedTable, private_table
from command_service.servicer import CommandServicer
from media.library import MediaLibrary
from mysocial import log as logconf
from mysocial import metrics, otel
from mysocial.config import ConfigError, Settings, split_addr
from mysocial.kafka import topics
from mysocial.kafka.probe import ReachabilityProbe
from mysocial.kafka.tail import ReaderFailed
from mysocial.process import tune_gc
from mysocial.rpc import (
    RunningServer,
    run_until_stopped,
    signal_received,
    start_server,
    start_unless_signalled,
)
from mysocial.startup import kafka_or_exit, metrics_or_exit, settings_or_exit
from mysocial.tls import server_credentials
from mysocial.v1 import command_service_pb2, command_service_pb2_grpc

log = logconf.get_logger("command.server")

DIRECTORY_LOAD_TIMEOUT_S = 300.0
DEV_SECRET_REFUSED = (
    "MYSOCIAL_JWT_SECRET (or MYSOCIAL_JWT_SECRET_FILE) is not set, and the public "
    "development secret is only accepted with MYSOCIAL_DEV_MODE=1"
)
SERVICE_NAME = command_service_pb2.DESCRIPTOR.services_by_name["CommandService"].full_name


@dataclass
class CommandServer:
    """A running command service (one worker)."""

    running: RunningServer
    publisher: Publisher
    directory: Directory
    settings: Settings
    probe: ReachabilityProbe | None = None
    stopping: bool = False
    _health_updates: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        return self.running.port

    def _watch_kafka(self) -> None:
        """Health follows Kafka: NOT_SERVING within ~3 s of the cluster no longer
        answering (a stalled broker included), SERVING again once it answers."""
        topic = self.settings.topic(topics.POSTS)
        producer = self.publisher.default
        self.probe = ReachabilityProbe(
            "command-producer",
            lambda timeout: producer.metadata(topic, timeout),
            asyncio.get_running_loop(),
            self._kafka_reachable,
        )
        self.probe.start()

    def _kafka_reachable(self, reachable: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._set_health(reachable))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def _set_health(self, serving: bool) -> None:
        if not self.stopping:
            await self.running.set_serving([SERVICE_NAME], serving)

    @classmethod
    async def start(
        cls, settings: Settings, addr: str | None = None, quota_table: BucketTable | None = None
    ) -> CommandServer:
        """Start serving on addr (default: settings.command_addr; port 0 = any free port).
        quota_table: the workers' shared buckets (command_service.quota); default: a
        table of this process alone."""
        if settings.uses_dev_jwt_secret:
            if not settings.dev_mode:
                raise ConfigError(DEV_SECRET_REFUSED)
            log.warning("dev_jwt_secret_in_use", hint="development mode (MYSOCIAL_DEV_MODE=1)")
        publisher = Publisher(settings)
        directory = Directory(settings, asyncio.get_running_loop())
        await directory.start()
        media = await asyncio.to_thread(MediaLibrary.from_settings, settings)
        quotas = Quotas(settings, quota_table or private_table())
        servicer = CommandServicer(settings, publisher, directory, media, quotas)
        running = await start_server(
            addr or settings.command_addr,
            lambda s: command_service_pb2_grpc.add_CommandServiceServicer_to_server(servicer, s),
            [SERVICE_NAME],
            serving=False,
            credentials=server_credentials(settings),
        )
        log.info("command_service_listening", port=running.port, pid=os.getpid())
        server = cls(running, publisher, directory, settings)
        # Serving once the directory knows every existing post and comment.
        try:
            await directory.loaded(DIRECTORY_LOAD_TIMEOUT_S)
        except BaseException:
            await server.stop(0)
            raise
        await running.set_serving([SERVICE_NAME], True)
        server._watch_kafka()
        return server

    async def serve(self, signalled: asyncio.Future[int] | None = None) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or the directory's reader dies (1)."""
        return await run_until_stopped(self.stop, self.directory.failure, signalled)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight RPCs finish, then flush the producer."""
        self.stopping = True
        if self.probe is not None:
            self.probe.stop(0)  # a probe under way ends on its own; nothing is reported
        for task in list(self._health_updates):
            task.cancel()
        await self.running.set_serving([SERVICE_NAME], False)
        await self.running.server.stop(self.settings.grace_period_s if grace is None else grace)
        undelivered = await asyncio.to_thread(self.publisher.close, self.settings.grace_period_s)
        await asyncio.to_thread(self.directory.stop)
        log.info("command_service_stopped", undelivered=undelivered)


async def _worker_main(settings: Settings, addr: str, table: BucketTable | None) -> int:
    signalled = signal_received()  # a stop while the directory loads ends the start-up
    try:
        server = await start_unless_signalled(CommandServer.start(settings, addr, table), signalled)
    except ReaderFailed:
        return 1  # the reader logged why
    if server is None:
        return 0
    tune_gc()
    return await server.serve(signalled)


def _worker(settings: Settings, addr: str, shared: SharedTable | None = None) -> int:
    """One worker until it is stopped; its exit code. shared: the parent's quota table."""
    logconf.configure(settings.log_level, settings.log_format, "command_service")
    table, memory = shared.attach() if shared is not None else (None, None)
    otel.configure(settings.otlp_endpoint, "mysocial-command")
    code = asyncio.run(_worker_main(settings, addr, table))
    otel.shutdown()
    if memory is not None:
        del table  # the buffer's last user before the memory is closed
        memory.close()
    # Drained and flushed: a late signal (Ctrl-C reaches the whole process group, the
    # parent then sends SIGTERM too) must not turn a clean exit into a kill.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _worker_process(settings: Settings, addr: str, shared: SharedTable) -> None:
    """A worker as a child process: its exit code is the process's."""
    sys.exit(_worker(settings, addr, shared))


def _reserve_port(addr: str) -> tuple[str, socket.socket | None]:
    """With port 0 and several workers, pick one concrete port all workers share."""
    host, port = split_addr(addr, "MYSOCIAL_COMMAND_ADDR")
    if port != 0:
        return addr, None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return f"{host}:{sock.getsockname()[1]}", sock


def run(settings: Settings) -> int:
    """Run the configured number of worker processes until SIGTERM/SIGINT."""
    logconf.configure(settings.log_level, settings.log_format, "command_service")
    if settings.uses_dev_jwt_secret and not settings.dev_mode:
        # Anyone can sign tokens with the public development secret: act as anyone.
        log.error("dev_jwt_secret_refused", setting="MYSOCIAL_JWT_SECRET", error=DEV_SECRET_REFUSED)
        return 2
    kafka_or_exit(settings)
    workers = settings.effective_command_workers
    if workers > 1:  # before serve(): it reads the workers' values from there
        os.environ[metrics.MULTIPROC_ENV] = tempfile.mkdtemp(prefix="mysocial-command-metrics-")
    served = metrics_or_exit(settings, "command")
    try:
        if workers == 1:
            return _worker(settings, settings.command_addr)
        return _run_workers(settings, workers)
    finally:
        if served is not None:
            served.close()
        folder = os.environ.pop(metrics.MULTIPROC_ENV, None)
        if workers > 1 and folder:
            shutil.rmtree(folder, ignore_errors=True)


def _run_workers(settings: Settings, workers: int) -> int:
    """The parent of several worker processes: restarts one that died."""
    addr, reserved = _reserve_port(settings.command_addr)
    shared, memory = SharedTable.create()  # the quotas every worker shares
    ctx = multiprocessing.get_context("spawn")  # gRPC must not be forked after init
    procs = [
        ctx.Process(target=_worker_process, args=(settings, addr, shared), daemon=False)
        for _ in range(workers)
    ]
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:  # Ctrl-C, then a supervisor's SIGTERM: the workers know already
            return
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for p in procs:
        p.start()
    log.info("command_service_workers_started", workers=workers, addr=addr)
    if reserved is not None:
        reserved.close()
    exit_code = 0
    while not stopping:
        for i, p in enumerate(procs):
            if not p.is_alive() and not stopping:
                log.error("worker_exited_restarting", exitcode=p.exitcode)
                if p.pid is not None:  # its live gauges (in flight, serving) end with it
                    mark_process_dead(p.pid)  # type: ignore[no-untyped-call]
                time.sleep(0.5)
                procs[i] = ctx.Process(
                    target=_worker_process, args=(settings, addr, shared), daemon=False
                )
                procs[i].start()
        time.sleep(0.2)
    for p in procs:
        p.join(settings.grace_period_s + 15)
        if p.is_alive():
            p.kill()
            exit_code = 1
        elif p.exitcode not in (0, None):
            exit_code = p.exitcode
    # The workers are done. A late signal (a supervisor's SIGTERM after Ctrl-C) must
    # not turn this clean exit into a kill: arriving while Python shuts down, after
    # its handlers are gone, it would end the process by its default action (CI saw
    # exit -15 in the Ctrl-C test). The workers ignore late signals the same way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    memory.close()
    memory.unlink()
    return exit_code


def main() -> None:
    sys.exit(run(settings_or_exit("command_service")))
