"""The 3-node KRaft cluster: it forms, the project's topics get replication factor 3 and
min.insync.replicas 2, provisioning says what to change on a topic that has less, and
acks=all writes behave as the README's "Durability" section promises under broker
faults (one node killed: nothing lost, no error; two down: no acknowledgement, then
writes resume when they return)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.topics import (
    Durability,
    TopicMismatchError,
    TopicSpec,
    ensure_topics,
    plan_replicas,
    provision,
    topic_specs,
)
from tests.support.helpers import make_settings, wait_until


def acks_all_producer(bootstrap: str, **overrides: Any) -> Producer:
    """The write path's guarantees: idempotent, acks=all."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            **overrides,
        }
    )


def produce(producer: Producer, topic: str, values: list[bytes], timeout: float) -> list[Any]:
    """Write values to partition 0 and wait for every delivery report; the errors (None
    for an acknowledged record). Compare them with `is None`: KafkaError == None leaves
    a stray TypeError set inside confluent-kafka (a SystemError at the next builtin)."""
    errors: list[Any] = []
    for value in values:
        producer.produce(topic, value, partition=0, on_delivery=lambda err, _m: errors.append(err))
    deadline = time.monotonic() + timeout
    while len(errors) < len(values) and time.monotonic() < deadline:
        producer.poll(0.1)
    assert len(errors) == len(values), f"{len(values) - len(errors)} deliveries unreported"
    return errors


def read_partition(bootstrap: str, topic: str) -> list[bytes]:
    """Every committed record of partition 0, from the beginning to its end now."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        tp = TopicPartition(topic, 0)
        _, high = consumer.get_watermark_offsets(tp, timeout=30)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(out) < high:
            assert time.monotonic() < deadline, f"read {len(out)} of {high}"
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append(msg.value() or b"")
        return out
    finally:
        consumer.close()


def one_partition_topic(cluster: EmbeddedCluster) -> str:
    settings = make_settings(cluster.bootstrap)
    name = settings.topic("durability")
    ensure_topics(AdminClient({"bootstrap.servers": cluster.bootstrap}), [TopicSpec(name, 1)])
    return name


def test_cluster_forms_with_replicated_internal_topics(kafka_cluster: EmbeddedCluster) -> None:
    assert kafka_cluster.node_ids == [1, 2, 3]
    assert kafka_cluster.live_brokers() == [1, 2, 3]
    for topic in ("__consumer_offsets", "__transaction_state"):
        for state in kafka_cluster.partitions(topic).values():
            assert sorted(state.replicas) == [1, 2, 3] and sorted(state.isr) == [1, 2, 3]
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    res = ConfigResource(ConfigResource.Type.BROKER, "2")
    conf = admin.describe_configs([res])[res].result(10)
    assert {k: conf[k].value for k in ("min.insync.replicas", "transaction.state.log.min.isr")} == {
        "min.insync.replicas": "2",
        "transaction.state.log.min.isr": "2",
    }
    assert conf["default.replication.factor"].value == "3"
    assert conf["unclean.leader.election.enable"].value == "false"
    coordinator = kafka_cluster.transaction_coordinator("mysocial.cluster-probe")
    assert coordinator in (1, 2, 3)
    assert kafka_cluster.group_coordinator("mysocial.processor") in (1, 2, 3)


def test_transaction_coordinator_is_the_one_the_client_finds(
    kafka_cluster: EmbeddedCluster,
) -> None:
    """librdkafka's own FindCoordinator answer, from its debug log, is the node
    transaction_coordinator computes."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.txn-coordinator")
    logger.addHandler(Capture())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for _ in range(3):
        transactional_id = f"test.coordinator.{uuid.uuid4().hex}"
        producer = Producer(
            {
                "bootstrap.servers": kafka_cluster.bootstrap,
                "transactional.id": transactional_id,
                "debug": "eos",
                "logger": logger,
            }
        )
        lines.clear()
        producer.init_transactions(30)
        producer.poll(0)  # serves the log lines
        # "FindCoordinator response: Transaction coordinator is broker 2 (127.0.0.1:...)"
        found = [m for line in lines if (m := re.search(r"coordinator is broker (\d+)", line))]
        assert found, [line for line in lines if "oordinator" in line]
        assert int(found[-1].group(1)) == kafka_cluster.transaction_coordinator(transactional_id)


def test_topics_get_replication_3_and_min_isr_2(kafka_cluster: EmbeddedCluster) -> None:
    s = make_settings(kafka_cluster.bootstrap)
    provision(s)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    names = [spec.name for spec in topic_specs(s)]
    # Each broker learns of new topics from the controller, some a moment after others.
    wait_until(lambda: admin.list_topics(timeout=10).topics.keys() >= {*names})
    md = admin.list_topics(timeout=10).topics
    for name in names:
        assert {len(p.replicas) for p in md[name].partitions.values()} == {3}, name
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    for res, fut in admin.describe_configs(resources).items():
        entry = fut.result(10)["min.insync.replicas"]
        assert entry.value == "2" and not entry.is_default, res.name
    assert provision(s) == []

    explicit = make_settings(kafka_cluster.bootstrap, replication_factor=2, min_insync_replicas=1)
    provision(explicit)
    name = explicit.topic("posts")
    posts = wait_until(lambda: admin.list_topics(name, timeout=10).topics[name].partitions)
    assert {len(p.replicas) for p in posts.values()} == {2}


def test_provisioning_says_what_to_change(kafka_cluster: EmbeddedCluster) -> None:
    s = make_settings(kafka_cluster.bootstrap)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    posts, likes, comments = s.topic("posts"), s.topic("likes"), s.topic("comments")
    futures = admin.create_topics(
        [
            NewTopic(posts, s.posts_partitions, 1, config={"min.insync.replicas": "1"}),
            NewTopic(likes, s.copartitions, 3, config={"min.insync.replicas": "1"}),
            NewTopic(
                comments, s.copartitions, 3, config={"unclean.leader.election.enable": "true"}
            ),
        ]
    )
    for fut in futures.values():
        fut.result(30)
    with pytest.raises(TopicMismatchError) as info:
        provision(s)
    message = str(info.value)
    assert f"topic {posts} has replication factor 1, this deployment requires at least 3" in message
    assert "python -m mysocial.kafka.topics --plan-replicas > plan.json" in message
    assert f"kafka-reassign-partitions.sh --bootstrap-server {kafka_cluster.bootstrap}" in message
    assert f"topic {likes} has min.insync.replicas=1, this deployment requires 2" in message
    assert (
        f"--alter --entity-type topics --entity-name {likes} --add-config min.insync.replicas=2"
        in message
    )
    assert f"topic {comments} has unclean.leader.election.enable=true" in message
    # The plan's replication factor follows the brokers the cluster shows: all three
    # (an earlier test restarts brokers; one still rejoining makes the factor 1).
    wait_until(lambda: len(admin.list_topics(timeout=10).brokers) == 3, what="3 brokers")
    plan = plan_replicas(s)  # what --plan-replicas prints
    moves = {(m["topic"], m["partition"]): m["replicas"] for m in plan["partitions"]}
    assert sorted(moves) == [(posts, p) for p in range(s.posts_partitions)]
    assert all(sorted(replicas) == [1, 2, 3] for replicas in moves.values())
    assert f"--entity-name {comments} --add-config unclean.leader.election.enable=false" in message
    # The same topics satisfy a deployment configured for what they have.
    lenient = s.with_(replication_factor=1, min_insync_replicas=1)
    assert ensure_topics(admin, topic_specs(lenient)[:2], 30, Durability(1, 1)) == []


def test_acks_all_write_survives_kill_9_of_a_node(kafka_cluster: EmbeddedCluster) -> None:
    topic = one_partition_topic(kafka_cluster)
    producer = acks_all_producer(kafka_cluster.bootstrap, **{"message.timeout.ms": 60000})
    before = [f"before-{i}".encode() for i in range(50)]
    assert all(err is None for err in produce(producer, topic, before, 30))
    leader = kafka_cluster.leader_of(topic)

    kafka_cluster.kill_node(leader)
    started = time.monotonic()
    after = [f"after-{i}".encode() for i in range(50)]
    errors = produce(producer, topic, after, 70)
    assert all(err is None for err in errors), errors  # no error reaches the client
    stalled = time.monotonic() - started
    new_leader = kafka_cluster.leader_of(topic)
    assert new_leader not in (leader, -1)
    assert leader not in kafka_cluster.isr_of(topic)
    assert read_partition(kafka_cluster.bootstrap, topic) == before + after
    assert stalled < 30, f"writes stalled {stalled:.1f}s after the leader died"

    kafka_cluster.start_node(leader)
    kafka_cluster.wait_until_in_sync([topic], timeout=60)
    assert sorted(kafka_cluster.isr_of(topic)) == [1, 2, 3]
    producer.flush(10)


def test_a_killed_node_is_started_again_only_once_fenced(kafka_cluster: EmbeddedCluster) -> None:
    """Started again before the controller fenced it, a killed leader would come back
    leading at its old epoch with an unreplicated log tail (docs/OPERATIONS.md)."""
    topic = one_partition_topic(kafka_cluster)
    leader = kafka_cluster.leader_of(topic)
    kafka_cluster.kill_node(leader)
    assert leader in kafka_cluster.live_brokers()  # not fenced yet: its session lasts
    kafka_cluster.wait_until_fenced(leader, timeout=60)
    assert leader not in kafka_cluster.live_brokers()
    assert kafka_cluster.leader_of(topic) not in (leader, -1)
    kafka_cluster.start_node(leader)  # fenced already: starts at once
    kafka_cluster.wait_until_in_sync([topic], timeout=60)
    assert sorted(kafka_cluster.isr_of(topic)) == [1, 2, 3]


def test_two_nodes_down_no_acknowledgement_then_recovery(kafka_cluster: EmbeddedCluster) -> None:
    topic = one_partition_topic(kafka_cluster)
    producer = acks_all_producer(
        kafka_cluster.bootstrap, **{"message.timeout.ms": 8000, "request.timeout.ms": 5000}
    )
    acknowledged = [f"ok-{i}".encode() for i in range(20)]
    assert all(err is None for err in produce(producer, topic, acknowledged, 30))
    leader = kafka_cluster.leader_of(topic)
    followers = [i for i in kafka_cluster.node_ids if i != leader]

    for node in followers:
        kafka_cluster.kill_node(node)
    started = time.monotonic()
    errors = produce(producer, topic, [b"unacknowledged"], 20)
    elapsed = time.monotonic() - started
    assert errors[0] is not None, "acknowledged with two of three replicas down"
    assert errors[0].code() in (KafkaError._MSG_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS)
    assert elapsed < 12, f"the write failed only after {elapsed:.1f}s"

    for node in followers:
        kafka_cluster.start_node(node)
    kafka_cluster.wait_until_in_sync([topic], timeout=90)

    def write_succeeds() -> bool:
        return produce(producer, topic, [b"after"], 20)[0] is None

    wait_until(write_succeeds, timeout=60, interval=0.5, what="acks=all writes to resume")
    records = read_partition(kafka_cluster.bootstrap, topic)
    # Everything acknowledged is there, in order; the unacknowledged write may be too
    # (a timed-out write is not known to have failed, as with any acks=all producer).
    assert records[:20] == acknowledged and records[-1] == b"after"
    assert set(records[20:-1]) <= {b"unacknowledged", b"after"}
    producer.flush(10)
