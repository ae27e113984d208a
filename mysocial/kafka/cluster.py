"""An embedded KRaft cluster of N combined broker+controller nodes on 127.0.0.1.

One cluster id, a controller quorum of all N nodes, distinct ports and data folders,
internal topics replicated min(3, N) with min ISR 2 at N >= 3 (node.replication_defaults).
`make run` and the tests start it from the same Maven-fetched jars as the single
broker; a cluster of one node is the single broker (mysocial.kafka.broker).

Fault tests drive it through the methods below: kill_node (SIGKILL), stop_node
(SIGTERM), start_node (same data folder), pause_node / resume_node (SIGSTOP /
SIGCONT), and ask where things live: leader_of, replicas_of, isr_of,
transaction_coordinator, group_coordinator; heal() puts every node back and waits
until every replica is in sync again.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mysocial.config import Settings
from mysocial.kafka.node import (
    BrokerError,
    KafkaNode,
    Listener,
    NodeSpec,
    ScramUser,
    formatted_cluster_id,
    free_ports,
    new_cluster_id,
    node_properties,
    quiet_client,
)

TRANSACTION_STATE = "__transaction_state"
CONSUMER_OFFSETS = "__consumer_offsets"
PROBE = "mysocial.cluster-probe"  # group and transactional id that create the above
# Per-node heap of a cluster's nodes. Kafka keeps its data in the page cache, not the
# heap; measured on a 3-node cluster (docs/DEVELOPMENT.md), 512 MiB leaves G1 ample room.
CLUSTER_NODE_HEAP = "512m"


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata describes it (-1: no leader)."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_partition(key: str, partitions: int) -> int:
    """The partition of __transaction_state (key: a transactional.id) or
    __consumer_offsets (key: a group id) whose leader coordinates `key`: Kafka's
    Utils.abs(key.hashCode()) % partitions."""
    h = java_string_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


class EmbeddedCluster:
    """N KRaft nodes on 127.0.0.1 running as child processes."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        heap: str = CLUSTER_NODE_HEAP,
        overrides: Mapping[str, str] | None = None,
        scram_users: Sequence[ScramUser] = (),
    ) -> None:
        if not nodes:
            raise BrokerError("a cluster needs at least one node")
        if len({n.node_id for n in nodes}) != len(nodes):
            raise BrokerError("node ids must be distinct")
        self.specs = list(nodes)
        self.overrides = dict(overrides or {})
        self.scram_users = list(scram_users)
        self.nodes = {spec.node_id: KafkaNode(spec, heap) for spec in self.specs}
        self._admins: dict[tuple[int, ...], AdminClient] = {}

    @classmethod
    def on_free_ports(
        cls,
        count: int,
        data_dir: Path,
        *,
        listeners: Sequence[tuple[str, str]] = (),
        node_overrides: Mapping[int, Mapping[str, str]] | None = None,
        **kwargs: Any,
    ) -> EmbeddedCluster:
        """count nodes on free ports, node i (1..count) in data_dir/node-i. listeners:
        extra (name, security protocol) listeners every node gets, each on a free port;
        node_overrides: per node id, properties applied after the cluster's."""
        per_node = 2 + len(listeners)
        ports = free_ports(per_node * count)
        specs = []
        for i in range(count):
            own = ports[i * per_node : (i + 1) * per_node]
            node_id = i + 1
            specs.append(
                NodeSpec(
                    node_id,
                    own[0],
                    own[1],
                    Path(data_dir) / f"node-{node_id}",
                    tuple(
                        Listener(n, p, port)
                        for (n, p), port in zip(listeners, own[2:], strict=True)
                    ),
                    dict((node_overrides or {}).get(node_id, {})),
                )
            )
        return cls(specs, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedCluster:
        """MYSOCIAL_KAFKA_BROKERS nodes: node i on MYSOCIAL_KAFKA_PORT + 2(i-1) (its
        controller on the next port). One node keeps MYSOCIAL_KAFKA_DATA_DIR itself, as
        the single broker always has; N nodes use <data dir>/cluster-of-N/node-i, so a
        change of N never reuses storage formatted for another quorum."""
        count = settings.kafka_brokers
        root = Path(settings.kafka_data_dir)
        specs = []
        for i in range(count):
            port = settings.kafka_port + 2 * i
            data = root if count == 1 else root / f"cluster-of-{count}" / f"node-{i + 1}"
            specs.append(NodeSpec(i + 1, port, port + 1, data))
        if count == 1:
            return cls(specs, heap="1g")
        return cls(specs)

    # -- what it is ----------------------------------------------------------------------

    @property
    def node_ids(self) -> list[int]:
        return [spec.node_id for spec in self.specs]

    @property
    def bootstrap(self) -> str:
        """Every node's PLAINTEXT address: clients find the cluster with any node down."""
        return ",".join(spec.address for spec in self.specs)

    def bootstrap_for(self, listener: str) -> str:
        """Every node's address on the extra listener named `listener`."""
        out = [x.address for spec in self.specs for x in spec.listeners if x.name == listener]
        if len(out) != len(self.specs):
            raise BrokerError(f"not every node has a listener named {listener!r}")
        return ",".join(out)

    def node(self, node_id: int) -> KafkaNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise BrokerError(f"no node {node_id}; nodes: {self.node_ids}") from None

    def running_ids(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.running]

    def responsive_ids(self) -> list[int]:
        """Nodes running and not paused: those that answer requests."""
        return [i for i, n in self.nodes.items() if n.running and not n.paused]

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Format what is unformatted, launch every node not running, wait until every
        node is a live broker in the metadata; at N > 1 also create the internal topics
        (their replication factor needs min(3, N) live brokers, so not mid-fault)."""
        self._format()
        try:
            for node in self._nodes():
                node.launch()
            self.wait_for_brokers(self.node_ids, timeout)
            if len(self.nodes) > 1:
                self.create_internal_topics(timeout)
        except Exception as exc:
            tails = "\n".join(f"node {n.node_id}:\n{n.log_tail(2000)}" for n in self._nodes())
            self.stop()
            raise BrokerError(f"{exc}\nends of the node logs:\n{tails}") from None

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown of every node: the highest ids one by one while the others
        keep a quorum (each hands its leaderships over), then the last majority together
        (a broker left without a quorum cannot finish its controlled shutdown)."""
        running = [n for n in reversed(self._nodes()) if n.running]
        majority = len(self.nodes) // 2 + 1
        while len(running) > majority:
            running.pop(0).stop(timeout)
        for node in running:
            node.terminate()
        for node in running:
            node.stop(timeout)

    def kill(self) -> None:
        """SIGKILL every node."""
        for node in self._nodes():
            node.kill()

    def _nodes(self) -> list[KafkaNode]:
        return [self.nodes[i] for i in self.node_ids]

    def _format(self) -> None:
        """Format unformatted nodes with the cluster id of any formatted one (or a new
        one), in parallel: each format is a JVM start."""
        found = (formatted_cluster_id(s.data_dir) for s in self.specs)
        ids = {cluster_id for cluster_id in found if cluster_id is not None}
        if len(ids) > 1:
            raise BrokerError(f"nodes were formatted for different clusters: {sorted(ids)}")
        cluster_id = ids.pop() if ids else new_cluster_id()
        running: list[tuple[KafkaNode, subprocess.Popen[str]]] = []
        for node in self._nodes():
            node.write_config(node_properties(node.spec, self.specs, self.overrides))
            cmd = node.format_command(cluster_id, self.scram_users)
            if cmd is not None:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                running.append((node, proc))
        for node, proc in running:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise BrokerError(f"formatting node {node.node_id} failed: {out}")

    # -- faults --------------------------------------------------------------------------

    def kill_node(self, node_id: int) -> None:
        """kill -9 one node: no controlled shutdown, its leaderships move once the
        controller fences it (broker.session.timeout.ms, 9 s)."""
        self.node(node_id).kill()

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM one node: a controlled shutdown that hands its leaderships over."""
        self.node(node_id).stop(timeout)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on its own data folder and wait until the
        cluster lists it as a live broker. A killed node is started only once the
        controller has fenced it (wait_until_fenced says why)."""
        node = self.node(node_id)
        self._fenced_before_start([node_id], timeout)
        node.launch()
        try:
            self.wait_for_brokers([node_id], timeout)
        except BrokerError as exc:
            raise BrokerError(f"{exc}\nend of node {node_id}'s log:\n{node.log_tail()}") from None

    def pause_node(self, node_id: int) -> None:
        """SIGSTOP one node: it keeps its connections but answers nothing."""
        self.node(node_id).pause()

    def resume_node(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        self.node(node_id).resume()

    def heal(self, timeout: float = 120.0) -> None:
        """Every node running and answering again, every partition fully in sync: what a
        fault test leaves behind for the next one."""
        for node in self._nodes():
            if node.paused:
                node.resume()
        down = [i for i in self.node_ids if not self.nodes[i].running]
        self._fenced_before_start(down, timeout)
        for i in down:
            self.nodes[i].launch()
        self.wait_for_brokers(self.node_ids, timeout)
        self.wait_until_in_sync(timeout=timeout)

    def wait_until_fenced(self, node_id: int, timeout: float = 60.0) -> None:
        """Block until the controller has fenced a node that died: the metadata no longer
        lists it as a live broker and it leads no partition (at most
        broker.session.timeout.ms, 9 s, after a kill -9).

        Why: started again sooner, the node comes back as the leader of its partitions
        at the same leader epoch, with whatever its log holds beyond what the other
        replicas have. Kafka 4.4's transaction coordinator then loads that unreplicated
        tail: here it sent COMMIT markers for a transaction whose PrepareCommit no
        other replica had; once the controller moved the leadership, the new
        coordinator aborted the same transaction, which came out committed on some
        partitions and aborted on others (docs/OPERATIONS.md, "Restarting a broker
        that died")."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                meta = self.admin().list_topics(timeout=5)
                leads = [
                    f"{name}-{p}"
                    for name, topic in meta.topics.items()
                    for p, pm in topic.partitions.items()
                    if pm.leader == node_id
                ]
                if node_id not in meta.brokers and not leads:
                    return
                why = f"live brokers {sorted(meta.brokers)}, leads {leads[:5]}"
            except (KafkaException, BrokerError) as exc:
                why = str(exc)
            if time.monotonic() > deadline:
                raise BrokerError(f"node {node_id} not fenced after {timeout:.0f}s: {why}")
            time.sleep(0.2)

    def _fenced_before_start(self, node_ids: Sequence[int], timeout: float) -> None:
        """wait_until_fenced for each node about to start, while the running nodes hold a
        controller majority (without one nothing is fenced, and nothing moves)."""
        if 2 * len(self.running_ids()) <= len(self.node_ids):
            return
        for node_id in node_ids:
            if not self.node(node_id).running:
                self.wait_until_fenced(node_id, timeout)

    # -- where things live ---------------------------------------------------------------

    def admin(self) -> AdminClient:
        """An AdminClient bootstrapped from the responsive nodes only (a paused node
        accepts connections and never answers); one per set of such nodes."""
        ids = tuple(self.responsive_ids())
        if not ids:
            raise BrokerError("no node is running")
        if ids not in self._admins:
            bootstrap = ",".join(self.node(i).spec.address for i in ids)
            self._admins[ids] = AdminClient(quiet_client({"bootstrap.servers": bootstrap}))
        return self._admins[ids]

    def live_brokers(self, timeout: float = 10.0) -> list[int]:
        """Broker ids the cluster's metadata lists as live (fenced ones are left out)."""
        return sorted(self.admin().list_topics(timeout=timeout).brokers)

    def wait_for_brokers(self, node_ids: Iterable[int], timeout: float = 90.0) -> None:
        """Block until every node in node_ids is a live broker in the metadata."""
        wanted = set(node_ids)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for i in wanted:
                node = self.node(i)
                if node.proc is not None and node.proc.poll() is not None:
                    raise BrokerError(f"node {i} exited with code {node.proc.returncode}")
            try:
                live = set(self.live_brokers(min(2.0, max(0.1, deadline - time.monotonic()))))
                if wanted <= live:
                    return
                last = f"live brokers {sorted(live)}, waiting for {sorted(wanted - live)}"
            except Exception as exc:  # KafkaException while listeners come up
                last = exc
            time.sleep(0.1)
        raise BrokerError(
            f"cluster not serving nodes {sorted(wanted)} after {timeout:.0f}s: {last}"
        )

    def partitions(self, topic: str, timeout: float = 10.0) -> dict[int, PartitionState]:
        """Leader, replicas and in-sync replicas of every partition of topic."""
        md = self.admin().list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise BrokerError(f"topic {topic}: {md.error if md else 'unknown'}")
        return {
            p: PartitionState(pm.leader, tuple(pm.replicas), tuple(pm.isrs))
            for p, pm in md.partitions.items()
        }

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The node leading topic-partition now (-1 while it has none)."""
        return self.partitions(topic)[partition].leader

    def replicas_of(self, topic: str, partition: int = 0) -> tuple[int, ...]:
        return self.partitions(topic)[partition].replicas

    def isr_of(self, topic: str, partition: int = 0) -> tuple[int, ...]:
        return self.partitions(topic)[partition].isr

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node coordinating transactional_id: the leader of its __transaction_state
        partition (confluent-kafka 2.x has no FindCoordinator/DescribeTransactions).
        The topic exists once a transactional producer has started (start() creates it)."""
        state = self.partitions(TRANSACTION_STATE)
        return state[coordinator_partition(transactional_id, len(state))].leader

    def group_coordinator(self, group_id: str) -> int:
        """The node coordinating consumer group group_id (its __consumer_offsets leader)."""
        offsets = self.partitions(CONSUMER_OFFSETS)
        return offsets[coordinator_partition(group_id, len(offsets))].leader

    def wait_until_in_sync(
        self, topics: Iterable[str] | None = None, timeout: float = 60.0
    ) -> None:
        """Block until every partition (of `topics`, default all, internal ones too) has a
        leader and all its replicas in sync."""
        deadline = time.monotonic() + timeout
        lagging: list[str] = []
        while True:
            try:
                md = self.admin().list_topics(timeout=5.0).topics
                names = list(topics) if topics is not None else list(md)
                lagging = [
                    f"{name}-{p}"
                    for name in names
                    for p, pm in (md[name].partitions.items() if name in md else [(-1, None)])
                    if pm is None or pm.leader < 0 or set(pm.isrs) != set(pm.replicas)
                ]
                if not lagging:
                    return
            except Exception as exc:  # KafkaException while a node comes back
                lagging = [str(exc)]
            if time.monotonic() > deadline:
                raise BrokerError(f"replicas not in sync after {timeout:.0f}s: {lagging[:10]}")
            time.sleep(0.2)

    def create_internal_topics(self, timeout: float = 60.0) -> None:
        """Create __consumer_offsets and __transaction_state now, with all nodes up: Kafka
        creates them on first use, with replication factor min(3, N), which fails while
        fewer nodes are live (a fault test that kills a node first would find no group or
        transaction coordinator)."""
        # A group's committed offsets need its coordinator: FindCoordinator creates the
        # offsets topic; NOT_COORDINATOR (or a timeout) while its partitions load.
        deadline = time.monotonic() + timeout
        consumer = Consumer(quiet_client({"bootstrap.servers": self.bootstrap, "group.id": PROBE}))
        try:
            while True:
                try:
                    consumer.committed([TopicPartition(PROBE, 0)], timeout=5.0)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            consumer.close()
        producer = Producer(
            quiet_client({"bootstrap.servers": self.bootstrap, "transactional.id": PROBE})
        )
        try:
            producer.init_transactions(timeout)
        finally:
            producer.flush(1.0)
        self.wait_until_in_sync([CONSUMER_OFFSETS, TRANSACTION_STATE], timeout)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
