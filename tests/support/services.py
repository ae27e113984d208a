"""Services as real processes: the processor (killable, restartable), the command
service, and the whole system (processor, command service and query service on free
ports) against the session's broker and a test namespace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mysocial import tls
from mysocial.config import PROJECT_ROOT, Settings
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2_grpc as q_grpc
from tests.support.helpers import free_port, free_ports, python_env, service_process

SERVING = health_pb2.HealthCheckResponse.SERVING


def health(
    addr: str,
    service: str,
    timeout: float = 1.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> int | None:
    """The health status of service at addr (over TLS with credentials), or None if it
    does not answer."""
    try:
        with tls.channel(addr, credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=service)
            return int(stub.Check(request, timeout=timeout).status)  # type: ignore[attr-defined]
    except grpc.RpcError:
        return None


class ProcessorProc:
    """A `python -m processor` child process that tests can kill and restart."""

    def __init__(self, settings: Settings, instance: str, log_dir: Path) -> None:
        self.settings = settings.with_(processor_instance_id=instance, log_level="info")
        self.log_path = log_dir / f"processor-{instance}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor"],
                env=python_env(self.settings),
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def terminate(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave it behind; the caller sees the hang in the code
            self.proc.wait()
            return -9

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_lines(self, n: int = 30) -> str:
        """Its log's last n lines but the periodic stats: what a failed test prints, as
        CI keeps nothing else of the run."""
        if not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        kept = [line[:600] for line in lines if "processor_stats" not in line]
        return f"{self.log_path.name}, last lines:\n" + "\n".join(kept[-n:])

    def key_lines(self, n: int = 40) -> str:
        """Every incarnation's starts, stops, aborts, retried transactional calls and
        lost partitions: how the processor met a fault, which its last lines may miss."""
        if not self.log_path.exists():
            return "(no log)"
        keys = (
            "processor_started",
            "processor_stopping",
            "transaction_aborted",
            "transaction_call_retry",
            "partitions_lost",
            "watchdog",
            "Traceback",
        )
        lines = self.log_path.read_text(errors="replace").splitlines()
        kept = [line[:400] for line in lines if any(k in line for k in keys)]
        return f"{self.log_path.name}, key lines ({len(kept)}):\n" + "\n".join(kept[-n:])

    def last_stats(self) -> str:
        """Its last periodic stats line: whether it was still consuming at the end."""
        if not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        stats = [line[:1500] for line in lines if "processor_stats" in line]
        return f"last stats: {stats[-1] if stats else '(none)'}"

    def wait(self, timeout: float) -> int:
        """The exit code of a process expected to end by itself."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing (a zombie to be)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextmanager
def command_service(settings: Settings, log_dir: Path) -> Iterator[str]:
    port = free_port()
    s = settings.with_(command_addr=f"127.0.0.1:{port}", command_workers=1)
    with service_process("command_service", s, log_dir / "command.log") as proc:
        channel = grpc.insecure_channel(s.command_addr)
        grpc.channel_ready_future(channel).result(timeout=30)
        channel.close()
        yield s.command_addr
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


class Service:
    """A service process that can be killed and restarted on the same address."""

    def __init__(
        self,
        module: str,
        settings: Settings,
        addr: str,
        log: Path,
        name: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.module, self.settings, self.addr, self.log, self.name = (
            module,
            settings,
            addr,
            log,
            name,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.credentials = credentials  # TLS services: how health checks connect

    def start(self, wait: bool = True) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=python_env(self.settings),
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        if wait:
            self.wait_serving()

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while health(self.addr, self.name, credentials=self.credentials) != SERVING:
            assert self.proc is not None and self.proc.poll() is None, (
                f"{self.module} died: {self.log}"
            )
            assert time.monotonic() < deadline, f"{self.module} not SERVING after {timeout}s"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    def rss(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)


class System:
    """Processor + command service + query service, with stubs for both APIs."""

    def __init__(
        self, settings: Settings, log_dir: Path, command_workers: int = 1, metrics: bool = False
    ) -> None:
        """metrics: each process serves /metrics on a port of its own (metrics_ports)."""
        command_port, query_port = free_ports(2)
        self.metrics_ports = dict(
            zip(("processor", "command", "query"), free_ports(3), strict=True)
        )

        def own(service: str) -> Settings:
            if not metrics:
                return self.settings
            return self.settings.with_(metrics_addr=f"127.0.0.1:{self.metrics_ports[service]}")

        command_addr = f"127.0.0.1:{command_port}"
        query_addr = f"127.0.0.1:{query_port}"
        self.settings = settings.with_(
            command_addr=command_addr,
            query_addr=query_addr,
            command_workers=command_workers,
            log_level="info",
        )
        self.processor = ProcessorProc(own("processor"), "a", log_dir)
        self.command = Service(
            "command_service",
            own("command"),
            command_addr,
            log_dir / "command.log",
            "mysocial.v1.CommandService",
        )
        self.query = Service(
            "query_service",
            own("query"),
            query_addr,
            log_dir / "query.log",
            "mysocial.v1.QueryService",
        )
        self._channels: list[grpc.Channel] = []

    def __enter__(self) -> System:
        self.processor.start()
        self.command.start()
        self.query.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for channel in self._channels:
            channel.close()
        self.query.stop()
        self.command.stop()
        self.processor.terminate()

    def commands(self) -> cmd_grpc.CommandServiceStub:
        channel = grpc.insecure_channel(self.command.addr)
        self._channels.append(channel)
        return cmd_grpc.CommandServiceStub(channel)

    def queries(self) -> q_grpc.QueryServiceStub:
        channel = grpc.insecure_channel(self.query.addr)
        self._channels.append(channel)
        return q_grpc.QueryServiceStub(channel)


def command_service_on_free_port(settings: Settings, log: Path) -> Service:
    """A command service (not started) on a free port of its own."""
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    return Service(
        "command_service",
        settings.with_(command_addr=addr),
        addr,
        log,
        "mysocial.v1.CommandService",
    )
