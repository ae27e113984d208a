"""Broker faults on a 3-node cluster (RF 3, min ISR 2), with the randomized workload's
retrying clients, the processor and the command service supervised as `make run` does.

After each scenario: every command answered OK is in Kafka (once, unless its first
attempt reached a stalled broker and was retried: same event id, counted once), the
projections equal the workload's own model, `processor audit` agrees, and any restart
a supervisor made is reported. The scenarios follow Kafka's replication and
transaction system tests and Jepsen's analyses of Kafka-compatible systems.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, TopicPartition

from command_service.commands import event_id_for
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.reader import partition_lag, stable_and_end_offsets
from mysocial.kafka.topics import PROCESSOR_GROUP
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from tests.support.evidence import (
    broker_log_sizes,
    broker_signs,
    format_history,
    post_history,
    transaction_log,
    transactions_around,
)
from tests.support.helpers import auth, free_port, processor_settings
from tests.support.services import ProcessorProc, Service
from tests.support.supervisor import Supervisor, Watched
from tests.support.workload import (
    INDETERMINATE,
    Acked,
    Model,
    Workload,
    check_acknowledged,
    check_exact,
)


@dataclass
class Running:
    settings: Settings
    addr: str
    processor: ProcessorProc
    command: Service
    supervisor: Supervisor
    cluster: EmbeddedCluster
    logs_from: dict[int, int]  # each broker's log size when the scenario began


@contextmanager
def system_on(cluster: EmbeddedCluster, tmp_path: Path) -> Iterator[Running]:
    """The processor and a command service on the cluster, restarted if they exit."""
    addr = f"127.0.0.1:{free_port()}"
    settings = processor_settings(
        cluster.bootstrap, tmp_path / "state", command_addr=addr, log_level="info"
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    processor = ProcessorProc(settings, "a", logs)
    command = Service(
        "command_service", settings, addr, logs / "command.log", "mysocial.v1.CommandService"
    )
    processor.start()
    command.start()
    watched = [
        Watched("processor", processor.alive, processor.start),
        Watched(
            "command_service",
            lambda: command.proc is not None and command.proc.poll() is None,
            lambda: command.start(wait=False),
        ),
    ]
    with Supervisor(watched) as supervisor:
        try:
            yield Running(
                settings, addr, processor, command, supervisor, cluster, broker_log_sizes(cluster)
            )
        finally:
            supervisor.__exit__()
            processor.terminate()
            command.stop()


def drive(
    run: Running,
    workload: Workload,
    total: int,
    faults: Sequence[tuple[int, Callable[[], None]]] = (),
) -> Model:
    """Drive the workload up to `total` commands; each fault runs once it sent its mark."""
    progress = {"sent": workload.sent}
    failures: list[BaseException] = []

    def conductor() -> None:
        try:
            for mark, fault in faults:
                while progress["sent"] < mark:
                    time.sleep(0.01)
                fault()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=conductor)
    thread.start()
    model = asyncio.run(workload.run(total, lambda n: progress.__setitem__("sent", n)))
    thread.join(300)
    assert not thread.is_alive() and failures == []
    assert workload.errors == []
    return model


def retrying(run: Running, seed: int) -> Workload:
    """The workload's clients: 5 s per attempt, an indeterminate call sent again."""
    return Workload(run.addr, seed=seed, users=40, call_timeout=5.0, retry_for=240.0)


def open_transactions(settings: Settings) -> dict[str, dict[int, tuple[int, int]]]:
    """Partitions the processor writes whose last stable offset is below their end (an
    open, maybe hanging, transaction hides what follows from read_committed readers;
    on posts-by-id or the trending candidates it also keeps the processor "behind")."""
    partitions = {spec.name: spec.partitions for spec in topics.topic_specs(settings)}
    out = {}
    for name in (
        topics.POSTS_WITH_COUNTS,
        topics.POST_COMMENTS,
        topics.POSTS_BY_ID,
        topics.TRENDING_CANDIDATES,
        topics.PROCESSOR_CHANGELOG,
    ):
        topic = settings.topic(name)
        offsets = stable_and_end_offsets(settings, topic, list(range(partitions[topic])), 30)
        out[name] = {p: (lso, hw) for p, (lso, hw) in offsets.items() if lso < hw}
    return out


def lagging(settings: Settings) -> dict[str, dict[int, tuple[int, int]]]:
    """The processor's input partitions it has not committed to the end of: what
    "did not catch up" means, partition by partition."""
    out = {}
    written_by_processor = {topics.POSTS_BY_ID, topics.TRENDING_CANDIDATES}
    group = settings.topic(PROCESSOR_GROUP)
    for name in (topics.POSTS, topics.LIKES, topics.COMMENTS, *written_by_processor):
        lag = partition_lag(settings, group, settings.topic(name), name in written_by_processor)
        behind = {
            p: (committed, end)
            for p, (committed, end, settled) in lag.items()
            if end > committed or not settled
        }
        if behind:
            out[name] = behind
    return out


def transactional_ids(settings: Settings) -> list[str]:
    """Instance a's transactional ids (processor/clients.py)."""
    base = f"{settings.topic(PROCESSOR_GROUP)}.a"
    return [base, f"{base}.txn1"]


def batches_of(cluster: EmbeddedCluster, settings: Settings, post_ids: list[str]) -> str:
    """The batches and transaction markers around the last output and changelog records
    of the posts that came out wrong."""
    out = []
    history = post_history(settings, post_ids)
    for name in (topics.POSTS_WITH_COUNTS, topics.PROCESSOR_CHANGELOG):
        at: dict[int, list[int]] = {}
        for lines in history.values():
            for line in lines:
                m = re.match(rf"{re.escape(name)}\[(\d+)\]@(\d+)", line)
                if m:
                    at.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        for partition, offsets in at.items():
            topic = settings.topic(name)
            out.append(transactions_around(cluster, topic, partition, offsets[-2:]))
    return "".join(out)


def verify(run: Running, workload: Workload, model: Model) -> dict[str, object]:
    try:
        check_exact(run.settings, model)
    except AssertionError as exc:
        # Evidence for the next reader: a stale view from an open transaction, or not.
        evidence: dict[str, object] = {}
        wrong = [p.post_id for p in model.posts.values() if p.post_id in str(exc)][:5]
        for what, probe in (
            ("open transactions (partition: stable, end)", open_transactions),
            ("behind (partition: committed, end)", lagging),
            ("history of the posts wrong", lambda s: format_history(post_history(s, wrong))),
            ("brokers on transactions", lambda _: broker_signs(run.cluster, run.logs_from)),
            ("batches and markers", lambda s: batches_of(run.cluster, s, wrong)),
            ("coordinator", lambda s: transaction_log(run.cluster, transactional_ids(s))),
        ):
            try:
                evidence[what] = probe(run.settings)
            except Exception as error:  # the cluster may be unwell: keep the first failure
                evidence[what] = f"not checked: {error!r}"
        raise AssertionError(
            f"{exc}\n"
            + "".join(f"{k}: {v}\n" for k, v in evidence.items())
            + f"restarts: {run.supervisor.restarts}\n{run.processor.last_stats()}\n"
            + run.processor.key_lines()
            + "\n"
            + run.processor.last_lines()
        ) from None
    report: dict[str, object] = dict(check_acknowledged(run.settings, workload))
    report["retries"] = dict(workload.retries)
    report["restarts"] = list(run.supervisor.restarts)
    print(f"scenario report: {report}")
    return report


def busiest_leader(cluster: EmbeddedCluster, settings: Settings) -> int:
    """The node leading the likes partition that holds the most records."""
    topic = settings.topic(topics.LIKES)
    consumer = Consumer(kafka_connection(settings).config({"group.id": "fault-probe"}))
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.copartitions)
        }
    finally:
        consumer.close()
    return cluster.leader_of(topic, max(ends, key=lambda p: ends[p]))


def bounce(cluster: EmbeddedCluster, node: int, down_s: float = 3.0) -> None:
    """kill -9 a node, leave it down a moment, start it once the controller fenced it
    (start_node waits: sooner, Kafka's coordinator acts on its unreplicated log tail,
    docs/OPERATIONS.md), wait until all is in sync."""
    cluster.kill_node(node)
    time.sleep(down_s)  # the fault's duration, not a wait for a condition
    cluster.start_node(node)
    cluster.wait_until_in_sync(timeout=120)


def test_killing_the_busiest_leader_and_the_transaction_coordinator(
    kafka_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    """Scenario 1: kill -9 the leader of the busiest partitions three times during a
    10,000-command workload (the second time the processor's transaction coordinator),
    restarting it each time."""
    with system_on(kafka_cluster, tmp_path) as run:
        txn_id = f"{run.settings.topic(PROCESSOR_GROUP)}.a"
        faults = [
            (2000, lambda: bounce(kafka_cluster, busiest_leader(kafka_cluster, run.settings))),
            (5000, lambda: bounce(kafka_cluster, kafka_cluster.transaction_coordinator(txn_id))),
            (8000, lambda: bounce(kafka_cluster, busiest_leader(kafka_cluster, run.settings))),
        ]
        workload = retrying(run, 101)
        verify(run, workload, drive(run, workload, 10_000, faults))


def test_two_brokers_down_acknowledge_nothing_then_service_resumes(
    kafka_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    """Scenario 2: with two of three brokers down, commands fail with UNAVAILABLE within
    their deadline and none is acknowledged; after the brokers return, service resumes
    by itself and the counts are exact.

    A failed like may still be written: when the post's partition is led by the
    surviving broker, it appends the record and waits for the followers `acks=all`
    asks for (the lost controller quorum cannot shrink the ISR), and the record is
    committed once they return. So the outage likes are sent again with their
    request_id until answered, as a client does, and then counted once each."""
    with system_on(kafka_cluster, tmp_path) as run:
        workload = retrying(run, 102)
        drive(run, workload, 1000)
        post = next(p for p in workload.model.posts.values() if not p.deleted)
        down = kafka_cluster.node_ids[:2]
        for node in down:
            kafka_cluster.kill_node(node)
        stub = cmd_grpc.CommandServiceStub(grpc.insecure_channel(run.addr))
        outcomes = []
        for i in range(10):
            began = time.monotonic()
            try:
                stub.LikePost(
                    cmd.LikePostRequest(post_id=post.post_id, request_id=f"down-{i}"),
                    metadata=auth(f"outage{i}"),
                    timeout=3.0,
                )
                outcomes.append(("OK", time.monotonic() - began))
            except grpc.RpcError as exc:
                outcomes.append((exc.code().name, time.monotonic() - began))
        assert all(code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") for code, _ in outcomes), outcomes
        assert max(seconds for _, seconds in outcomes) < 4.0, outcomes
        for node in down:
            kafka_cluster.start_node(node)
        kafka_cluster.wait_until_in_sync(timeout=180)
        for i in range(10):
            settle_like(stub, workload, post.post_id, f"outage{i}", f"down-{i}")
        verify(run, workload, drive(run, workload, workload.sent + 1000))


def settle_like(
    stub: cmd_grpc.CommandServiceStub, workload: Workload, post_id: str, user: str, rid: str
) -> None:
    """Send a like again with its request_id until it is answered OK (bounded), then
    record it in the workload's model and acknowledged events."""
    deadline = time.monotonic() + 120
    while True:
        try:
            stub.LikePost(
                cmd.LikePostRequest(post_id=post_id, request_id=rid),
                metadata=auth(user),
                timeout=5.0,
            )
            break
        except grpc.RpcError as exc:
            if exc.code() not in INDETERMINATE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # a retry's pause, as the workload's clients make
    workload.model.posts[post_id].likers.add(user)
    event_id = event_id_for("like", user, rid, post_id)
    workload.acked.append(Acked(topics.LIKES, event_id, retried=True))


def test_hard_bouncing_every_broker_in_turn(kafka_cluster: EmbeddedCluster, tmp_path: Path) -> None:
    """Scenario 3: kill -9 and restart each broker in turn while the processor commits."""
    with system_on(kafka_cluster, tmp_path) as run:
        faults = [
            (1000 + 1000 * i, lambda n=node: bounce(kafka_cluster, n))
            for i, node in enumerate(kafka_cluster.node_ids)
        ]
        workload = retrying(run, 103)
        verify(run, workload, drive(run, workload, 4000, faults))


def test_a_broker_stopped_for_thirty_seconds(
    kafka_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    """Scenario 6a: SIGSTOP the busiest leader for 30 s (it holds its connections and
    answers nothing: clients must time out and move on), then SIGCONT it."""
    with system_on(kafka_cluster, tmp_path) as run:

        def stall() -> None:
            node = busiest_leader(kafka_cluster, run.settings)
            kafka_cluster.pause_node(node)
            time.sleep(30)  # the fault's duration
            kafka_cluster.resume_node(node)

        workload = retrying(run, 104)
        model = drive(run, workload, 3000, [(1000, stall)])
        kafka_cluster.wait_until_in_sync(timeout=120)
        verify(run, workload, model)


@pytest.fixture
def cluster_with_a_small_disk(tmp_path: Path) -> Iterator[tuple[EmbeddedCluster, Path]]:
    """A 3-node cluster whose node 3 keeps its partitions on a 48 MiB tmpfs (its
    metadata log stays on the ordinary disk)."""
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    cluster = EmbeddedCluster.on_free_ports(
        3,
        tmp_path / "cluster",
        node_overrides={
            3: {"log.dirs": str(small / "logs"), "metadata.log.dir": str(tmp_path / "meta-3")}
        },
    )
    try:
        cluster.start()
        yield cluster, small
    finally:
        cluster.stop()
        subprocess.run(["umount", "-l", str(small)], check=False)


def fill_to_within(disk: Path, filler: Path, room: int) -> None:
    """Grow `filler` until `disk` has at most `room` bytes free. The broker writes to
    the same disk meanwhile and may take the last bytes first (CI saw that race):
    a full disk is what the scenario wants, so ENOSPC here ends the filling."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while (free := shutil.disk_usage(disk).free) > room:
            try:
                os.write(fd, bytes(min(1 << 20, free - room)))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return
    finally:
        os.close(fd)


def test_a_broker_whose_disk_fills_up(
    cluster_with_a_small_disk: tuple[EmbeddedCluster, Path], tmp_path: Path
) -> None:
    """Scenario 6b: node 3's log directory fills up under load. The node takes its log
    directory offline (and stops leading or following); the other two keep the
    service going; once space is freed and the node restarted, it catches up."""
    cluster, small = cluster_with_a_small_disk
    filler = small / "filler"
    with system_on(cluster, tmp_path) as run:

        def fill() -> None:
            fill_to_within(small, filler, 64 * 1024)  # the workload fills the rest

        def free_and_restart() -> None:
            filler.unlink()
            if 3 not in cluster.running_ids():
                cluster.start_node(3)
            else:
                cluster.stop_node(3)
                cluster.start_node(3)

        workload = retrying(run, 105)
        model = drive(run, workload, 5000, [(1000, fill), (3500, free_and_restart)])
        cluster.wait_until_in_sync(timeout=180)
        node_log = cluster.node(3).log_file.read_text(errors="replace")
        assert "No space left on device" in node_log  # the fault really happened
        verify(run, workload, model)
