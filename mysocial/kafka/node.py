"""One KRaft node of the embedded Kafka: the jars, its configuration, its process.

The jars are the official Apache Kafka distribution (org.apache.kafka:kafka_2.13 and its
dependencies) fetched from Maven Central by Maven into `.cache/`; the version is pinned
in kafka/pom.xml. A second start reuses the cache and needs no network. Every node acts
as broker and controller ("combined" mode): N of them form a cluster whose controller
quorum is all N (mysocial.kafka.cluster).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from mysocial.config import PROJECT_ROOT

POM = PROJECT_ROOT / "kafka" / "pom.xml"
LOG4J_CONFIG = PROJECT_ROOT / "kafka" / "log4j2.properties"
CACHE = PROJECT_ROOT / ".cache"


class BrokerError(RuntimeError):
    """The embedded broker could not be fetched, formatted or started."""


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
    # The stamp names the pom it was fetched for: a dependency added there is fetched.
    wanted = f"{kafka_version()} {hashlib.sha256(POM.read_bytes()).hexdigest()[:16]}\n"
    if stamp.exists() and stamp.read_text() == wanted:
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
    stamp.write_text(wanted)
    return target


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("Java 17+ is required to run the Kafka broker")
    return found


@dataclass(frozen=True)
class Listener:
    """An extra listener of a node, beside its PLAINTEXT one (e.g. SASL_SSL for tests of
    secure clients). Its security settings (keystores, `listener.name.<name>.*` JAAS
    config, `sasl.enabled.mechanisms`) go in the node's or the cluster's overrides."""

    name: str  # listener name, e.g. "SECURE"; upper case as Kafka expects
    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    port: int
    host: str = "127.0.0.1"  # advertised host: a TLS certificate must name it

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM credential written into the cluster metadata when storage is formatted
    (`kafka-storage format --add-scram`), so SASL/SCRAM works from the first start."""

    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"

    def format_arg(self) -> str:
        for value in (self.name, self.password):
            if not value or any(c in value for c in ',]="'):
                raise BrokerError(f'SCRAM user or password {value!r}: empty, or has , ] = or "')
        if self.mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise BrokerError(f"SCRAM mechanism {self.mechanism!r}: SCRAM-SHA-256 or -512")
        return f"{self.mechanism}=[name={self.name},password={self.password}]"


@dataclass(frozen=True)
class NodeSpec:
    """Where one node lives: its id, PLAINTEXT and controller ports, data folder, extra
    listeners and its own configuration overrides (applied after the cluster's)."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    listeners: tuple[Listener, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def replication_defaults(nodes: int) -> dict[str, str]:
    """What makes the cluster durable: replication factor min(3, N) and min ISR 2 at N >= 3
    for the internal topics (offsets, transaction state, share state) and for topics
    created without their own (Kafka Streams' internal topics); no unclean election."""
    rf = min(3, nodes)
    isr = 2 if rf >= 3 else 1
    return {
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        # A replica that was not in sync never becomes leader: acknowledged writes are
        # never truncated away (Kafka's default; stated so nobody turns it on unseen).
        "unclean.leader.election.enable": "false",
    }


SINGLE_NODE_SESSION_TIMEOUT_MS = 10 * 60 * 1000


def liveness_defaults(nodes: int) -> dict[str, str]:
    """How long the controller waits for a broker's heartbeat before fencing it. In a
    cluster, fencing a stalled broker moves its leaders to the other replicas (Kafka's
    default, 9 s). A single node has no other replica: after a stall past the timeout
    (SIGSTOP, a VM freeze, a long pause) its own controller fenced it on resuming,
    every partition was briefly without a leader, and the transaction coordinator
    skipped the markers of the transaction it rolled back meanwhile, leaving it
    hanging (docs/OPERATIONS.md, "Hanging transactions"; reproduced by
    test_the_workload_through_a_kafka_outage[sigstop]). One node is therefore given a
    session it cannot outlive by stalling."""
    if nodes > 1:
        return {}
    return {"broker.session.timeout.ms": str(SINGLE_NODE_SESSION_TIMEOUT_MS)}


def node_properties(
    spec: NodeSpec, voters: Sequence[NodeSpec], cluster_overrides: Mapping[str, str]
) -> str:
    """server.properties of one combined broker+controller node of a cluster of voters."""
    quorum = ",".join(f"{v.node_id}@127.0.0.1:{v.controller_port}" for v in voters)
    listeners = [f"PLAINTEXT://127.0.0.1:{spec.port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{spec.port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    for extra in spec.listeners:
        listeners.append(f"{extra.name}://{extra.host}:{extra.port}")
        advertised.append(f"{extra.name}://{extra.address}")
        protocols.append(f"{extra.name}:{extra.protocol}")
    listeners.append(f"CONTROLLER://127.0.0.1:{spec.controller_port}")
    props = {
        "process.roles": "broker,controller",
        "node.id": str(spec.node_id),
        "controller.quorum.voters": quorum,
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(spec.data_dir / "logs"),
        # Topics are provisioned explicitly (mysocial.kafka.topics), never by accident.
        "auto.create.topics.enable": "false",
        **replication_defaults(len(voters)),
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.num.partitions": "12",
        "group.initial.rebalance.delay.ms": "0",
        # Abort transactions of crashed producers soon after their timeout expires.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "num.partitions": "1",
        **liveness_defaults(len(voters)),
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        # Index files are preallocated sparse and memory-mapped. With the default 10 MiB,
        # the first write to each index page faulted in a large zero-filled folio
        # (readahead of a sparse file on ext4, kernel 6.x): measured under the
        # processor's catch-up, the broker spent 2-6 us of kernel time per event
        # zeroing pages, more than all its other work. 1 MiB still indexes 512 MiB of
        # log per segment (one entry per 4 KiB) and took that cost away.
        "log.index.size.max.bytes": str(1024 * 1024),
        **cluster_overrides,
        **spec.overrides,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def formatted_cluster_id(data_dir: Path) -> str | None:
    """The cluster id a node's storage was formatted with, or None if unformatted."""
    meta = data_dir / "logs" / "meta.properties"
    if not meta.exists():
        return None
    match = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.MULTILINE)
    return match.group(1) if match else None


class KafkaNode:
    """One node's process: format its storage once, launch, stop, kill, pause, resume."""

    def __init__(self, spec: NodeSpec, heap: str) -> None:
        self.spec = spec
        self.heap = heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def node_id(self) -> int:
        return self.spec.node_id

    @property
    def config_file(self) -> Path:
        return self.spec.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.spec.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, text: str) -> None:
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)

    def format_command(self, cluster_id: str, scram_users: Sequence[ScramUser]) -> list[str] | None:
        """The StorageTool command formatting this node, or None if already formatted."""
        if formatted_cluster_id(self.spec.data_dir) is not None:
            return None
        cmd = [
            java(),
            "-cp",
            str(fetch() / "*"),
            "kafka.tools.StorageTool",
            "format",
            # "=" form: a random id may start with "-" and read as an option.
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.config_file),
        ]
        for user in scram_users:
            cmd.append(f"--add-scram={user.format_arg()}")
        return cmd

    def ports(self) -> list[int]:
        return [self.spec.port, self.spec.controller_port, *(x.port for x in self.spec.listeners)]

    def launch(self) -> None:
        """Start the JVM (storage must be formatted); returns at once."""
        if self.running:
            return
        for port in self.ports():
            if not port_is_free(port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 (node {self.node_id}) is in use: another broker "
                    "is running there; stop it, set MYSOCIAL_KAFKA_PORT, or point "
                    "KAFKA_BOOTSTRAP_SERVERS at it"
                )
        cmd = [
            java(),
            "-Xms256m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            str(fetch() / "*"),
            "kafka.Kafka",
            str(self.config_file),
        ]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child process
        try:
            # Its own session: Ctrl-C in `make run` reaches the supervisor, which stops
            # the nodes in order, not every node at once.
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self.paused = False

    def terminate(self) -> None:
        """Begin a controlled shutdown (SIGTERM) without waiting for it; stop() waits."""
        if self.proc is not None and self.running:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
                self.paused = False
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it does not exit in time."""
        self.terminate()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or handed over."""
        proc, self.proc = self.proc, None
        self.paused = False
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the node hangs with its connections open (a GC pause, a frozen VM)."""
        if self.proc is None or not self.running:
            raise BrokerError(f"node {self.node_id} is not running")
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None and self.running:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def wait_until_serving(
    bootstrap: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    brokers: int = 1,
) -> None:
    """Block until the cluster's metadata lists `brokers` live brokers; BrokerError on
    timeout or when `proc` exits meanwhile."""
    deadline = time.monotonic() + timeout
    admin = AdminClient(quiet_client({"bootstrap.servers": bootstrap}))
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} while starting")
        try:
            md = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if len(md.brokers) >= brokers:
                return
            last = f"{len(md.brokers)} of {brokers} brokers registered"
        except Exception as exc:  # KafkaException while the listener is not up yet
            last = exc
        time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap} not serving after {timeout:.0f}s: {last}")


def quiet_client(config: dict[str, Any]) -> dict[str, Any]:
    """Client config for probing a cluster whose nodes are starting, dead or paused on
    purpose: librdkafka's connection-refused lines would only be noise. log_level 0
    rather than a Python logger: a logger callback can run while librdkafka destroys a
    client and leave a stray exception behind (seen as SystemError in tests)."""
    return {**config, "log_level": 0}


def free_port(pair: bool = False) -> int:
    """A free TCP port on 127.0.0.1; with pair=True port+1 is free too (a broker's
    controller listens there)."""
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0
