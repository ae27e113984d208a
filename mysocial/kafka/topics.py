"""Topic provisioning: the names, keys and layout of DESIGN.md, created idempotently.

`ensure_topics` creates what is missing and refuses to run against topics whose
partition count or cleanup policy differ from the configuration: co-partitioning of
likes, comments and the processor's topics is what makes per-post state correct, so
a mismatch must stop the system rather than silently mis-route events. Every topic gets
the configured replication factor and `min.insync.replicas` (README, "Durability"); an
existing topic with fewer replicas or another min ISR stops provisioning too, with the
command that fixes it.

    python -m mysocial.kafka.topics                  # provision
    python -m mysocial.kafka.topics --plan-replicas  # kafka-reassign-partitions plan
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection

# Contract names (DESIGN.md, "Topics").
POSTS = "posts"
LIKES = "likes"
COMMENTS = "comments"
POSTS_WITH_COUNTS = "posts_with_counts"
POST_COMMENTS = "post_comments"
TRENDING_POSTS = "trending_posts"
# Internal topics, under the mysocial. prefix.
POSTS_BY_ID = "mysocial.posts-by-id"
PROCESSOR_CHANGELOG = "mysocial.processor-changelog"
TRENDING_CANDIDATES = "mysocial.trending-candidates"
DEAD_LETTER = "mysocial.dead-letter"
# The processor's consumer group: operators and the audit read its committed offsets
# (lag) under this name.
PROCESSOR_GROUP = "mysocial.processor"

FOREVER = -1
DAY_MS = 24 * 3600 * 1000
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


class TopicMismatchError(RuntimeError):
    """An existing topic does not have the layout this deployment requires."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its full name, partition count and topic-level configs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def cleanup_policy(self) -> str:
        return self.config.get("cleanup.policy", "delete")


@dataclass(frozen=True)
class Durability:
    """Replication of the project's topics; 0 means auto (see the settings)."""

    replication_factor: int = 0
    min_insync_replicas: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Durability:
        return cls(settings.replication_factor, settings.min_insync_replicas)

    def factor_for(self, live_brokers: int) -> int:
        """The replication factor new topics get on a cluster of live_brokers."""
        return self.replication_factor or max(1, min(3, live_brokers))

    def min_isr_for(self, replication_factor: int) -> int:
        """min.insync.replicas of a topic with that many replicas: one replica may fail
        without stopping acks=all writes, and no acknowledged write rests on one alone."""
        return self.min_insync_replicas or (2 if replication_factor >= 3 else 1)


def replication_problem(topic: str, actual: int, wanted: int, bootstrap: str) -> str:
    return (
        f"topic {topic} has replication factor {actual}, this deployment requires at least "
        f"{wanted}: write a plan with `python -m mysocial.kafka.topics --plan-replicas > "
        f"plan.json`, then run `kafka-reassign-partitions.sh --bootstrap-server {bootstrap} "
        f"--reassignment-json-file plan.json --execute` (or set "
        f"MYSOCIAL_REPLICATION_FACTOR={actual})"
    )


def min_isr_problem(topic: str, actual: int, wanted: int, bootstrap: str) -> str:
    return (
        f"topic {topic} has min.insync.replicas={actual}, this deployment requires {wanted}: "
        f"run `kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
        f"--entity-name {topic} --add-config min.insync.replicas={wanted}` (or set "
        f"MYSOCIAL_MIN_INSYNC_REPLICAS={actual})"
    )


def unclean_problem(topic: str, bootstrap: str) -> str:
    return (
        f"topic {topic} has unclean.leader.election.enable=true: an out-of-sync replica "
        f"could become leader and drop acknowledged events; run `kafka-configs.sh "
        f"--bootstrap-server {bootstrap} --alter --entity-type topics --entity-name {topic} "
        f"--add-config unclean.leader.election.enable=false`"
    )


def reassignment_plan(
    current: Mapping[str, Mapping[int, Sequence[int]]], brokers: Sequence[int], factor: int
) -> dict[str, Any]:
    """A kafka-reassign-partitions plan giving every partition with fewer than `factor`
    replicas enough of them: its replicas stay (the leader first), brokers are added in
    an order rotated by partition so the new replicas spread evenly."""
    ordered = sorted(brokers)
    if factor > len(ordered):
        raise TopicMismatchError(
            f"replication factor {factor} needs {factor} brokers, not {ordered}"
        )
    moves = []
    for topic in sorted(current):
        for partition, replicas in sorted(current[topic].items()):
            if len(replicas) >= factor:
                continue
            new = list(replicas)
            shift = partition % len(ordered)
            for broker in ordered[shift:] + ordered[:shift]:
                if len(new) == factor:
                    break
                if broker not in new:
                    new.append(broker)
            moves.append({"topic": topic, "partition": partition, "replicas": new})
    return {"version": 1, "partitions": moves}


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the system uses, derived from the settings."""
    t = settings.topic
    engagement = {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.engagement_retention_ms),
        # Retention deletes whole closed segments: roll at least daily, so events go
        # within a day of their retention rather than up to a week late.
        "segment.ms": str(min(settings.engagement_retention_ms, DAY_MS)),
        # The broker's append time is the trusted "accepted at" of an event
        # (trending clamps event times from the future to it).
        "message.timestamp.type": "LogAppendTime",
    }
    compact = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
    # Only closed segments are compacted: roll often enough that restores stay short.
    compact_hot = {**compact, "segment.ms": str(10 * 60 * 1000)}
    compact_small = {**compact, "segment.ms": str(60 * 1000), "segment.bytes": str(16 * 2**20)}
    n = settings.copartitions
    return [
        TopicSpec(
            t(POSTS),
            settings.posts_partitions,
            {
                "cleanup.policy": "delete",
                "retention.ms": str(FOREVER),
                "message.timestamp.type": "LogAppendTime",
            },
        ),
        TopicSpec(t(LIKES), n, dict(engagement)),
        TopicSpec(t(COMMENTS), n, dict(engagement)),
        TopicSpec(t(POSTS_WITH_COUNTS), n, dict(compact_hot)),
        TopicSpec(t(POST_COMMENTS), n, dict(compact_hot)),
        TopicSpec(t(TRENDING_POSTS), 1, dict(compact_small)),
        TopicSpec(t(POSTS_BY_ID), n, {"cleanup.policy": "delete", "retention.ms": str(FOREVER)}),
        TopicSpec(t(PROCESSOR_CHANGELOG), n, dict(compact_hot)),
        TopicSpec(t(TRENDING_CANDIDATES), 1, dict(compact_small)),
        TopicSpec(
            t(DEAD_LETTER), 1, {"cleanup.policy": "delete", "retention.ms": str(THIRTY_DAYS_MS)}
        ),
    ]


def ensure_topics(
    admin: AdminClient,
    specs: list[TopicSpec],
    timeout: float = 30.0,
    durability: Durability | None = None,
    bootstrap: str = "<bootstrap servers>",
) -> list[str]:
    """Create missing topics and verify every one; returns the names created.

    Raises TopicMismatchError when a topic has another partition count, cleanup policy
    or min.insync.replicas than wanted, fewer replicas, or unclean leader election on;
    `bootstrap` only goes into the messages' commands.
    """
    durability = durability or Durability()
    metadata = admin.list_topics(timeout=timeout)
    existing = metadata.topics
    factor = durability.factor_for(len(metadata.brokers))
    present = [s for s in specs if s.name in existing]
    problems = _problems(admin, present, existing, factor, durability, bootstrap, timeout)
    if problems:
        raise TopicMismatchError("; ".join(problems))

    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    if factor > len(metadata.brokers):
        raise TopicMismatchError(
            f"replication factor {factor} (MYSOCIAL_REPLICATION_FACTOR) needs {factor} live "
            f"brokers, the cluster has {len(metadata.brokers)}: start them or lower the setting"
        )
    min_isr = str(durability.min_isr_for(factor))
    new = [
        NewTopic(s.name, s.partitions, factor, config={**s.config, "min.insync.replicas": min_isr})
        for s in missing
    ]
    futures = admin.create_topics(new, request_timeout=timeout)
    created: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            # Created meanwhile (another provisioner, or metadata that had not caught up
            # with a creation): verified below like the rest.
            if exc.args and getattr(exc.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise
    # The new topics inherit what the cluster sets (unclean election) and raced ones
    # may differ in anything: check them as existing ones.
    now = _wait_for_leaders(admin, [s.name for s in missing], timeout)
    problems = _problems(admin, missing, now, factor, durability, bootstrap, timeout)
    if problems:
        raise TopicMismatchError("; ".join(problems))
    return created


def _problems(
    admin: AdminClient,
    specs: list[TopicSpec],
    topics: Mapping[str, Any],
    factor: int,
    durability: Durability,
    bootstrap: str,
    timeout: float,
) -> list[str]:
    """What differs between existing topics (metadata `topics`) and their specs."""
    problems: list[str] = []
    replicas: dict[str, int] = {}
    for spec in specs:
        meta = topics[spec.name]
        if meta.error is not None:
            problems.append(f"topic {spec.name}: {meta.error}")
            continue
        if len(meta.partitions) != spec.partitions:
            problems.append(
                f"topic {spec.name} has {len(meta.partitions)} partitions but this deployment "
                f"is configured for {spec.partitions}; fix the setting or migrate the topic"
            )
        replicas[spec.name] = min((len(p.replicas) for p in meta.partitions.values()), default=0)
        if replicas[spec.name] < factor:
            problems.append(replication_problem(spec.name, replicas[spec.name], factor, bootstrap))
    if replicas:
        # min.insync.replicas suits the replication factor the topic has, or will have
        # once the reassignment above is done (a broker down does not fail the check).
        isr = {name: durability.min_isr_for(max(n, factor)) for name, n in replicas.items()}
        checked = [s for s in specs if s.name in replicas]
        problems += _check_configs(admin, checked, isr, bootstrap, timeout)
    return problems


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> dict[str, Any]:
    """Block until every partition of the new topics has a leader (usable at once);
    the metadata that showed it."""
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=timeout).topics
        waiting = [
            n
            for n in names
            if n not in md
            or md[n].error is not None
            or any(p.leader < 0 for p in md[n].partitions.values())
        ]
        if not waiting:
            return dict(md)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without partition leaders after {timeout}s: {waiting}")
        time.sleep(0.05)


def _check_configs(
    admin: AdminClient,
    specs: list[TopicSpec],
    min_isr: Mapping[str, int],
    bootstrap: str,
    timeout: float,
) -> list[str]:
    """Cleanup policy, min.insync.replicas and unclean leader election of topics (their
    effective values: a topic's own, else the cluster's)."""
    wanted = {s.name: s.cleanup_policy for s in specs}
    problems = []
    for name, entries in _describe_topics_configs(admin, list(wanted), timeout).items():
        policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
        if policy != wanted[name]:
            problems.append(f"topic {name}: cleanup.policy={policy}, expected {wanted[name]}")
        isr = int(entries["min.insync.replicas"].value) if "min.insync.replicas" in entries else 1
        if isr != min_isr[name]:
            problems.append(min_isr_problem(name, isr, min_isr[name], bootstrap))
        unclean = entries.get("unclean.leader.election.enable")
        if unclean is not None and unclean.value == "true":
            problems.append(unclean_problem(name, bootstrap))
    return problems


def _describe_topics_configs(
    admin: AdminClient, names: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Every config of each topic. On a cluster, a broker may not know yet of a topic
    another one just reported (each learns from the controller in its own time): such
    UNKNOWN_TOPIC_OR_PART answers are asked again until the timeout."""
    deadline = time.monotonic() + timeout
    out: dict[str, dict[str, Any]] = {}
    while True:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names if n not in out]
        for resource, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            try:
                out[resource.name] = fut.result(timeout)
            except KafkaException as exc:
                unknown = exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                if not unknown or time.monotonic() > deadline:
                    raise
        if len(out) == len(names):
            return out
        time.sleep(0.1)


def provision(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Ensure every topic of this deployment exists with the right layout."""
    admin = kafka_connection(settings).admin()
    durability = Durability.from_settings(settings)
    return ensure_topics(admin, topic_specs(settings), timeout, durability, settings.bootstrap)


def plan_replicas(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
    """The reassignment that gives this deployment's topics their replication factor."""
    admin = kafka_connection(settings).admin()
    names = {s.name for s in topic_specs(settings)}
    md = settled_metadata(admin, names, timeout)
    factor = Durability.from_settings(settings).factor_for(len(md.brokers))
    current = {
        s.name: {p: list(pm.replicas) for p, pm in md.topics[s.name].partitions.items()}
        for s in topic_specs(settings)
        if s.name in md.topics and md.topics[s.name].error is None
    }
    return reassignment_plan(current, list(md.brokers), factor)


def settled_metadata(admin: AdminClient, names: set[str], timeout: float) -> Any:
    """The fullest cluster metadata several reads agree on.

    Each read asks whichever broker the client picks, and a broker that has not caught
    up with the controller (just restarted, or topics created a moment ago) lists fewer
    brokers, leaves new topics out, or shows them leaderless: a plan from that view
    would leave partitions out or pick too low a factor. The fullest view wins, and once
    three later reads show the same one, it is the cluster's (within the deadline).
    """
    deadline = time.monotonic() + timeout
    best: Any = None
    best_view: tuple[int, int] = (-1, -1)
    agreeing = 0
    while True:
        md = admin.list_topics(timeout=timeout)
        ready = [
            n
            for n in names
            if n in md.topics
            and md.topics[n].error is None
            and all(pm.leader >= 0 for pm in md.topics[n].partitions.values())
        ]
        view = (len(md.brokers), len(ready))
        if view > best_view:
            best, best_view, agreeing = md, view, 0
        elif view == best_view:
            agreeing += 1
        if agreeing >= 3 or time.monotonic() > deadline:
            return best
        time.sleep(0.2)  # metadata propagation; bounded by the deadline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mysocial.kafka.topics")
    parser.add_argument(
        "--plan-replicas",
        action="store_true",
        help="print the kafka-reassign-partitions plan that adds the missing replicas",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.plan_replicas:
        try:
            print(json.dumps(plan_replicas(settings), indent=1))
        except TopicMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        created = provision(settings)
    except TopicMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"topics ready on {settings.bootstrap}; created: {', '.join(created) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
