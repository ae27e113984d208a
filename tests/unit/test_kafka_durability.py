"""Durability settings without a broker: the replication factor and min ISR chosen, the
messages that say what to change, the reassignment plan, the nodes' configuration and
where a transactional id's coordinator lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from mysocial.config import ConfigError, Settings
from mysocial.kafka.broker import EmbeddedBroker
from mysocial.kafka.cluster import EmbeddedCluster, coordinator_partition, java_string_hash
from mysocial.kafka.node import (
    BrokerError,
    Listener,
    NodeSpec,
    ScramUser,
    node_properties,
    replication_defaults,
)
from mysocial.kafka.topics import (
    Durability,
    TopicMismatchError,
    min_isr_problem,
    reassignment_plan,
    replication_problem,
    unclean_problem,
)


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.mark.parametrize(
    ("brokers", "factor", "min_isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)]
)
def test_auto_durability_follows_the_cluster_size(brokers: int, factor: int, min_isr: int) -> None:
    auto = Durability()
    assert auto.factor_for(brokers) == factor
    assert auto.min_isr_for(factor) == min_isr
    assert replication_defaults(brokers)["default.replication.factor"] == str(factor)
    assert replication_defaults(brokers)["min.insync.replicas"] == str(min_isr)
    assert replication_defaults(brokers)["transaction.state.log.min.isr"] == str(min_isr)
    assert replication_defaults(brokers)["unclean.leader.election.enable"] == "false"


def test_explicit_durability_wins() -> None:
    explicit = Durability(replication_factor=2, min_insync_replicas=2)
    assert explicit.factor_for(5) == 2 and explicit.min_isr_for(2) == 2
    assert Durability.from_settings(Settings(min_insync_replicas=1)) == Durability(0, 1)


def test_settings_reject_a_min_isr_above_the_replication_factor() -> None:
    with pytest.raises(ConfigError, match="MYSOCIAL_MIN_INSYNC_REPLICAS=3 exceeds"):
        Settings(replication_factor=2, min_insync_replicas=3).validate()
    Settings(replication_factor=0, min_insync_replicas=3).validate()  # auto: judged later
    with pytest.raises(ConfigError, match="MYSOCIAL_KAFKA_BROKERS must be at least 1"):
        Settings(kafka_brokers=0).validate()


def test_embedded_bootstrap_lists_every_node() -> None:
    assert Settings(kafka_port=9092).bootstrap == "127.0.0.1:9092"
    three = Settings(kafka_port=9092, kafka_brokers=3)
    assert three.bootstrap == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert Settings(kafka_bootstrap_servers="k:9092", kafka_brokers=3).bootstrap == "k:9092"


def test_mismatch_messages_name_the_command() -> None:
    rf = replication_problem("posts", 1, 3, "b:9092")
    assert rf.startswith("topic posts has replication factor 1, this deployment requires")
    assert "python -m mysocial.kafka.topics --plan-replicas > plan.json" in rf
    assert "kafka-reassign-partitions.sh --bootstrap-server b:9092" in rf
    assert "--reassignment-json-file plan.json --execute" in rf
    assert "MYSOCIAL_REPLICATION_FACTOR=1" in rf
    isr = min_isr_problem("likes", 1, 2, "b:9092")
    assert (
        "kafka-configs.sh --bootstrap-server b:9092 --alter --entity-type topics "
        "--entity-name likes --add-config min.insync.replicas=2" in isr
    )
    assert "MYSOCIAL_MIN_INSYNC_REPLICAS=1" in isr
    unclean = unclean_problem("comments", "b:9092")
    assert "--entity-name comments --add-config unclean.leader.election.enable=false" in unclean


def test_reassignment_plan_adds_replicas_and_keeps_the_leader_first() -> None:
    current = {"likes": {0: [1], 1: [2], 2: [3], 3: [1, 2, 3]}, "posts": {0: [2, 1]}}
    plan = reassignment_plan(current, [3, 1, 2], 3)
    assert plan["version"] == 1
    moves = {(m["topic"], m["partition"]): m["replicas"] for m in plan["partitions"]}
    assert moves == {
        ("likes", 0): [1, 2, 3],
        ("likes", 1): [2, 3, 1],
        ("likes", 2): [3, 1, 2],
        ("posts", 0): [2, 1, 3],
    }
    with pytest.raises(TopicMismatchError, match="needs 3 brokers"):
        reassignment_plan(current, [1, 2], 3)


def spec(node_id: int, tmp: Path, **kw: object) -> NodeSpec:
    return NodeSpec(node_id, 9000 + 10 * node_id, 9001 + 10 * node_id, tmp / str(node_id), **kw)  # type: ignore[arg-type]


def test_node_properties_form_one_quorum(tmp_path: Path) -> None:
    voters = [spec(i, tmp_path) for i in (1, 2, 3)]
    p = props(node_properties(voters[1], voters, {"num.io.threads": "4"}))
    assert p["node.id"] == "2"
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.voters"] == "1@127.0.0.1:9011,2@127.0.0.1:9021,3@127.0.0.1:9031"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9020,CONTROLLER://127.0.0.1:9021"
    assert p["log.dirs"] == str(tmp_path / "2" / "logs")
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["transaction.state.log.replication.factor"] == "3"
    assert p["min.insync.replicas"] == "2"
    assert p["unclean.leader.election.enable"] == "false"
    assert p["num.io.threads"] == "4"
    assert "broker.session.timeout.ms" not in p  # a stalled node is fenced: leaders move


def test_a_single_node_is_not_fenced_for_a_stall(tmp_path: Path) -> None:
    """Fencing the only node leaves its partitions leaderless, and the transaction
    markers sent meanwhile are skipped: one node outlives any plausible stall."""
    node = spec(1, tmp_path)
    p = props(node_properties(node, [node], {}))
    assert int(p["broker.session.timeout.ms"]) >= 5 * 60 * 1000
    assert (
        props(node_properties(node, [node], {"broker.session.timeout.ms": "9000"}))[
            "broker.session.timeout.ms"
        ]
        == "9000"
    )  # an operator's own choice wins


def test_extra_listeners_and_node_overrides(tmp_path: Path) -> None:
    secure = Listener("SECURE", "SASL_SSL", 9443, host="localhost")
    node = spec(1, tmp_path, listeners=(secure,), overrides={"num.io.threads": "2"})
    p = props(
        node_properties(node, [node], {"num.io.threads": "8", "sasl.enabled.mechanisms": "X"})
    )
    assert p["listeners"].split(",") == [
        "PLAINTEXT://127.0.0.1:9010",
        "SECURE://localhost:9443",
        "CONTROLLER://127.0.0.1:9011",
    ]
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9010,SECURE://localhost:9443"
    assert "SECURE:SASL_SSL" in p["listener.security.protocol.map"].split(",")
    assert p["num.io.threads"] == "2" and p["sasl.enabled.mechanisms"] == "X"
    assert p["offsets.topic.replication.factor"] == "1"


def test_scram_users_become_format_arguments() -> None:
    user = ScramUser("alice", "alice-secret")
    assert user.format_arg() == "SCRAM-SHA-512=[name=alice,password=alice-secret]"
    assert ScramUser("bob", "pw", "SCRAM-SHA-256").format_arg().startswith("SCRAM-SHA-256=[")
    with pytest.raises(BrokerError):
        ScramUser("eve", "a,b").format_arg()
    with pytest.raises(BrokerError):
        ScramUser("eve", "pw", "PLAIN").format_arg()


def test_cluster_layouts(tmp_path: Path) -> None:
    cluster = EmbeddedCluster.on_free_ports(
        3, tmp_path, listeners=[("SECURE", "SASL_SSL")], node_overrides={2: {"a": "b"}}
    )
    assert cluster.node_ids == [1, 2, 3]
    ports = [p for n in cluster.nodes.values() for p in n.ports()]
    assert len(ports) == len(set(ports)) == 9
    assert cluster.node(2).spec.data_dir == tmp_path / "node-2"
    assert cluster.node(2).spec.overrides == {"a": "b"}
    assert len(cluster.bootstrap.split(",")) == len(cluster.bootstrap_for("SECURE").split(",")) == 3
    with pytest.raises(BrokerError, match="no node 4"):
        cluster.node(4)

    three = EmbeddedCluster.from_settings(
        Settings(kafka_port=9092, kafka_brokers=3, kafka_data_dir=str(tmp_path))
    )
    assert three.bootstrap == Settings(kafka_port=9092, kafka_brokers=3).bootstrap
    assert three.node(3).spec.controller_port == 9097
    assert three.node(3).spec.data_dir == tmp_path / "cluster-of-3" / "node-3"
    one = EmbeddedCluster.from_settings(Settings(kafka_data_dir=str(tmp_path)))
    assert one.node(1).spec.data_dir == tmp_path and one.node(1).heap == "1g"
    broker = EmbeddedBroker(9200, tmp_path)
    assert broker.bootstrap == "127.0.0.1:9200" and broker.log_file == tmp_path / "broker.log"


def test_coordinator_partition_is_kafkas() -> None:
    # String.hashCode values from the JDK; "polygenelubricants" hashes to
    # Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
    assert java_string_hash("") == 0
    assert java_string_hash("abc") == 96354
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert java_string_hash("\U0001f600") == 31 * 0xD83D + 0xDE00  # UTF-16 surrogates
    assert coordinator_partition("polygenelubricants", 12) == 0
    assert coordinator_partition("abc", 12) == 96354 % 12
    assert java_string_hash("mysocial.processor.7") == -714996858
    assert coordinator_partition("mysocial.processor.7", 50) == 714996858 % 50
