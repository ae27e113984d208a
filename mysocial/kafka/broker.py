"""The embedded single-node KRaft broker: fetch, format, start, wait, stop.

The broker is the official Apache Kafka distribution's jars (org.apache.kafka:kafka_2.13
and its dependencies) fetched from Maven Central by Maven into `.cache/`; the version
is pinned in kafka/pom.xml. A second start reuses the cache and needs no network.

    python -m mysocial.kafka.broker fetch        # download only (idempotent)
    python -m mysocial.kafka.broker run          # foreground broker until SIGTERM/Ctrl-C
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka import admin_client

POM = PROJECT_ROOT / "kafka" / "pom.xml"
LOG4J_CONFIG = PROJECT_ROOT / "kafka" / "log4j2.properties"
CACHE = PROJECT_ROOT / ".cache"


class BrokerError(RuntimeError):
    """The embedded broker could not be fetched or started."""


def kafka_version() -> str:
    """The pinned Kafka version (kafka.version in kafka/pom.xml)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise BrokerError(f"kafka.version not found in {POM}")
    return match.group(1)


def libs_dir() -> Path:
    return CACHE / "kafka" / kafka_version() / "libs"


def fetch(quiet: bool = True) -> Path:
    """Download the broker jars with Maven unless cached; returns the jar folder."""
    target = libs_dir()
    stamp = target / ".complete"
    if stamp.exists():
        return target
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is required to fetch the Kafka broker")
    tmp = target.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-B",
        "-f",
        str(POM),
        f"-Dmaven.repo.local={CACHE / 'm2'}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    if quiet:
        cmd.insert(2, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(
            f"fetching Kafka {kafka_version()} failed:\n{result.stdout}{result.stderr}"
        )
    if not any(p.name.startswith("kafka_2.13-") for p in tmp.glob("*.jar")):
        raise BrokerError(f"Maven finished but {tmp} holds no kafka_2.13 jar")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    stamp.write_text(kafka_version() + "\n")
    return target


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17+ is required to run the Kafka broker")
    return java


def server_properties(port: int, data_dir: Path, overrides: dict[str, str] | None = None) -> str:
    """Broker configuration for one node acting as broker and controller."""
    controller = port + 1
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        # Topics are provisioned explicitly (mysocial.kafka.topics), never by accident.
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "12",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Abort transactions of crashed producers soon after their timeout expires.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "num.partitions": "1",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        # Index files are preallocated sparse and memory-mapped. With the default 10 MiB,
        # the first write to each index page faulted in a large zero-filled folio
        # (readahead of a sparse file on ext4, kernel 6.x): measured under the
        # processor's catch-up, the broker spent 2-6 us of kernel time per event
        # zeroing pages, more than all its other work. 1 MiB still indexes 512 MiB of
        # log per segment (one entry per 4 KiB) and took that cost away.
        "log.index.size.max.bytes": str(1024 * 1024),
        **(overrides or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def wait_until_serving(
    bootstrap: str, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the broker answers a metadata request; raise BrokerError on timeout."""
    deadline = time.monotonic() + timeout
    admin = admin_client(bootstrap, logger=_null_logger())
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} while starting")
        try:
            md = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while the listener is not up yet
            last = exc
        time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} not serving after {timeout:.0f}s: {last}")


def _null_logger() -> logging.Logger:
    """Connection-refused noise is expected while the broker starts: discard it."""
    logger = logging.getLogger("mysocial.kafka.bootstrap-probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


class EmbeddedBroker:
    """A single-node KRaft broker on 127.0.0.1 running as a child process."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        heap: str = "1g",
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.overrides = overrides or {}
        self.port = port
        self.data_dir = Path(data_dir)
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBroker:
        return cls(settings.kafka_port, Path(settings.kafka_data_dir))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _classpath(self) -> str:
        return str(fetch() / "*")

    def _format_if_needed(self, config: Path) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = _kraft_cluster_id()
        result = subprocess.run(
            [
                _java(),
                "-cp",
                self._classpath(),
                "kafka.tools.StorageTool",
                "format",
                # "=" form: a random id may start with "-" and read as an option.
                f"--cluster-id={cluster_id}",
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> None:
        """Start (formatting storage on first use) and wait until it serves."""
        if self.proc is not None and self.proc.poll() is None:
            return
        for port in (self.port, self.port + 1):
            if not port_is_free(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is in use: another broker is running there; stop "
                    "it, set MYSOCIAL_KAFKA_PORT, or point KAFKA_BOOTSTRAP_SERVERS at it"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(server_properties(self.port, self.data_dir, self.overrides))
        self._format_if_needed(config)
        cmd = [
            _java(),
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(config),
        ]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        try:
            wait_until_serving(self.bootstrap, timeout, self.proc)
        except BrokerError:
            self.stop()
            tail = self.log_file.read_text(errors="replace")[-4000:]
            raise BrokerError(f"broker failed to start; end of {self.log_file}:\n{tail}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1; with pair=True port+1 is free too (a broker's
    controller listens there)."""
    import socket

    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair:
            return port
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def free_ports(count: int) -> list[int]:
    """count distinct free TCP ports on 127.0.0.1.

    Two free_port() calls may return the same port (nothing holds it in between), and
    gRPC servers bind with SO_REUSEPORT: two services would then share one port and
    split its connections. The sockets here stay bound until every port is chosen.
    """
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def _kraft_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mysocial.kafka.broker")
    parser.add_argument("action", choices=["fetch", "run"])
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(fetch(quiet=False))
        return 0
    settings = Settings.from_env()
    broker = EmbeddedBroker.from_settings(settings)
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    broker.start()
    print(
        f"Kafka {kafka_version()} serving on {broker.bootstrap} (log: {broker.log_file})",
        flush=True,
    )
    while not stop and broker.proc is not None and broker.proc.poll() is None:
        time.sleep(0.2)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
