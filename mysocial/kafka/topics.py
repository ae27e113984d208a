"""Topic provisioning: the names, keys and layout of DESIGN.md, created idempotently.

`ensure_topics` creates what is missing and refuses to run against topics whose
partition count or cleanup policy differ from the configuration: co-partitioning of
likes, comments and the processor's topics is what makes per-post state correct, so
a mismatch must stop the system rather than silently mis-route events.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from mysocial.config import Settings
from mysocial.kafka.connection import kafka_connection

# Contract names (DESIGN.md, "Topics").
POSTS = "posts"
LIKES = "likes"
COMMENTS = "comments"
POSTS_WITH_COUNTS = "posts_with_counts"
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


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the system uses, derived from the settings."""
    t = settings.topic
    engagement = {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.engagement_retention_ms),
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
        TopicSpec(t(TRENDING_POSTS), 1, dict(compact_small)),
        TopicSpec(t(POSTS_BY_ID), n, {"cleanup.policy": "delete", "retention.ms": str(FOREVER)}),
        TopicSpec(t(PROCESSOR_CHANGELOG), n, dict(compact_hot)),
        TopicSpec(t(TRENDING_CANDIDATES), 1, dict(compact_small)),
        TopicSpec(
            t(DEAD_LETTER), 1, {"cleanup.policy": "delete", "retention.ms": str(THIRTY_DAYS_MS)}
        ),
    ]


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create missing topics and verify existing ones; returns the names created.

    Raises TopicMismatchError when an existing topic has another partition count or
    cleanup policy than its spec.
    """
    existing = admin.list_topics(timeout=timeout).topics
    problems: list[str] = []
    for spec in specs:
        meta = existing.get(spec.name)
        if meta is None:
            continue
        if meta.error is not None:
            problems.append(f"topic {spec.name}: {meta.error}")
        elif len(meta.partitions) != spec.partitions:
            problems.append(
                f"topic {spec.name} has {len(meta.partitions)} partitions but this deployment "
                f"is configured for {spec.partitions}; fix the setting or migrate the topic"
            )
    present = [s for s in specs if s.name in existing and existing[s.name].error is None]
    if present:
        problems += _check_cleanup(admin, present, timeout)
    if problems:
        raise TopicMismatchError("; ".join(problems))

    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, replication_factor=-1, config=s.config) for s in missing],
        request_timeout=timeout,
    )
    created: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            # A concurrent provisioner created it first: fine, it is verified next run.
            if exc.args and getattr(exc.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise
    _wait_for_leaders(admin, [s.name for s in missing], timeout)
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Block until every partition of the new topics has a leader (usable at once)."""
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
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without partition leaders after {timeout}s: {waiting}")
        time.sleep(0.05)


def _check_cleanup(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> list[str]:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    wanted = {s.name: s.cleanup_policy for s in specs}
    problems = []
    for resource, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        entries = fut.result(timeout)
        policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
        expected = wanted[resource.name]
        if policy != expected:
            problems.append(f"topic {resource.name}: cleanup.policy={policy}, expected {expected}")
    return problems


def provision(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Ensure every topic of this deployment exists with the right layout."""
    admin = kafka_connection(settings).admin()
    return ensure_topics(admin, topic_specs(settings), timeout)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m mysocial.kafka.topics").parse_args(argv)
    settings = Settings.from_env()
    try:
        created = provision(settings)
    except TopicMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"topics ready on {settings.bootstrap}; created: {', '.join(created) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
