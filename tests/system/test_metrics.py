"""Every process serves Prometheus metrics and HTTP health: a known workload through
the whole system (two command workers: their values are summed by the parent), then
/metrics read with prometheus_client's own parsers (text format and OpenMetrics) must
show exactly that workload."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from mysocial.config import PROJECT_ROOT
from mysocial.kafka.topics import provision
from mysocial.metrics import DEFAULT_PORTS
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from processor.audit import wait_caught_up
from tests.support.helpers import auth, free_port, make_settings, service_process, wait_until
from tests.support.services import System

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(port: int, path: str, accept: str = "") -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the process's metrics port."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, parsed by the official text-format parser."""
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def scrape_or_empty(port: int) -> Samples:
    """scrape(), or nothing while the process is not listening yet."""
    try:
        return scrape(port)
    except urllib.error.URLError:
        return {}


def names(port: int) -> set[str]:
    """Every metric family and sample name /metrics shows."""
    body = http_get(port, "/metrics")[2]
    out: set[str] = set()
    for family in text_string_to_metric_families(body):
        out.add(family.name)
        out.update(s.name for s in family.samples)
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
def system(kafka_bootstrap: str, tmp_path: Path) -> Iterator[System]:
    settings = make_settings(kafka_bootstrap, processor_state_dir=str(tmp_path / "state"))
    provision(settings)
    (tmp_path / "logs").mkdir()
    with System(settings, tmp_path / "logs", command_workers=2, metrics=True) as running:
        yield running


def _ready(port: int) -> bool:
    return http_get(port, "/readyz")[0] == 200


def _drain(call: grpc.Call, got: list[object]) -> None:
    try:
        for message in call:  # type: ignore[attr-defined]
            got.append(message)
    except grpc.RpcError:
        pass


def test_metrics_count_the_workload(system: System) -> None:
    ports = system.metrics_ports
    for port in ports.values():
        assert http_get(port, "/healthz")[0] == 200
        wait_until(partial(_ready, port), what="ready")
    assert http_get(ports["query"], "/nothing")[0] == 404

    commands, queries = system.commands(), system.queries()
    posts = [
        commands.CreatePost(cmd.CreatePostRequest(caption=f"m{i}"), metadata=auth(f"a{i}")).post_id
        for i in range(5)
    ]
    feed_got: list[object] = []
    posts_got: list[object] = []
    feed = queries.WatchFeed(q.WatchFeedRequest())
    watch = queries.WatchPosts(q.WatchPostsRequest(post_ids=posts[:2]))
    readers = [
        threading.Thread(target=_drain, args=(feed, feed_got), daemon=True),
        threading.Thread(target=_drain, args=(watch, posts_got), daemon=True),
    ]
    for reader in readers:
        reader.start()
    for i in range(20):
        like = cmd.LikePostRequest(post_id=posts[i % 5])
        commands.LikePost(like, metadata=auth(f"fan{i}"))
    for i in range(6):
        comment = cmd.AddCommentRequest(post_id=posts[i % 2], text=f"c{i}")
        commands.AddComment(comment, metadata=auth(f"talker{i}"))
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as missing:
            commands.LikePost(cmd.LikePostRequest(post_id=str(uuid.uuid4())), metadata=auth("fan0"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert wait_caught_up(system.settings, 60)

    command = scrape(ports["command"])
    handled = "grpc_server_handled_total"
    service = "mysocial.v1.CommandService"
    assert value(command, handled, grpc_method="CreatePost", grpc_code="OK") == 5
    assert value(command, handled, grpc_method="LikePost", grpc_code="OK") == 20
    assert value(command, handled, grpc_method="AddComment", grpc_code="OK") == 6
    assert value(command, handled, grpc_method="LikePost", grpc_code="NOT_FOUND") == 3
    assert value(command, "grpc_server_started_total", grpc_service=service) == 34
    assert value(command, "grpc_server_handling_seconds_count", grpc_method="LikePost") == 23
    assert value(command, "grpc_server_in_flight", grpc_service=service) == 0
    rejected = "mysocial_rpc_rejected_total"
    assert value(command, rejected, grpc_method="LikePost", reason="POST_NOT_FOUND") == 3
    produced = "mysocial_command_produce_seconds_count"
    assert value(command, produced, topic="likes", outcome="ok") == 20
    assert value(command, produced, topic="comments", outcome="ok") == 6
    assert value(command, produced, topic="posts", outcome="ok") == 5
    assert value(command, "mysocial_command_producer_queue") == 0
    assert value(command, "mysocial_serving") == 1

    # The processor's per-topic figures come from librdkafka's statistics (every 5 s).
    t = system.settings.topic

    def processor_counted() -> bool:
        p = scrape(ports["processor"])
        consumed = "mysocial_processor_events_consumed_total"
        return (
            value(p, consumed, topic=t("likes")) == 20
            and value(p, consumed, topic=t("comments")) == 6
            and value(p, consumed, topic=t("posts")) == 5
            and value(p, "mysocial_processor_records_produced_total", topic=t("posts_with_counts"))
            > 0
            and value(p, "mysocial_processor_consumer_lag") == 0
        )

    wait_until(processor_counted, timeout=30, what="processor statistics")
    processor = scrape(ports["processor"])
    assert value(processor, "mysocial_processor_commits_total") > 0
    assert value(processor, "mysocial_processor_aborts_total") == 0
    assert value(processor, "mysocial_processor_dead_letters_total") == 0
    assert value(processor, "mysocial_processor_tasks", state="running") > 0
    assert value(processor, "mysocial_processor_freshness_seconds_count") > 0
    assert value(processor, "mysocial_processor_commit_events_sum") >= 31

    wait_until(lambda: len(posts_got) >= 2 and len(feed_got) >= 5, what="stream messages")
    query = scrape(ports["query"])
    assert value(query, "mysocial_query_subscribers", kind="feed") == 1
    assert value(query, "mysocial_query_subscribers", kind="posts") == 1
    sent = "grpc_server_msg_sent_total"
    wait_until(
        lambda: value(scrape(ports["query"]), sent, grpc_method="WatchPosts") == len(posts_got),
        what="WatchPosts messages counted",
    )
    assert value(query, "mysocial_query_apply_delay_seconds_count") > 0
    assert value(query, "mysocial_query_stream_delay_seconds_count", kind="posts") > 0
    assert value(query, "grpc_server_started_total", grpc_method="WatchFeed") == 1
    feed.cancel()
    watch.cancel()
    for reader in readers:
        reader.join(5)
    wait_until(
        lambda: value(scrape(ports["query"]), "mysocial_query_subscribers") == 0,
        what="streams closed",
    )
    # `mysocial top` reads the same endpoints: every process up, nothing behind.
    urls = [f"--{svc}-metrics=http://127.0.0.1:{port}/metrics" for svc, port in ports.items()]
    shown_top = subprocess.run(
        [sys.executable, "-m", "client.cli", "top", "--json", *urls],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert shown_top.returncode == 0, shown_top.stderr
    view = json.loads(shown_top.stdout)
    assert view["up"] == {"command": True, "query": True, "processor": True}
    assert view["processor_lag"] == 0 and view["read_model_lag"] == 0
    closed = scrape(ports["query"])
    assert value(closed, handled, grpc_method="WatchFeed", grpc_code="CANCELLED") == 1

    # The audit as a long-running check exposes its last result.
    audit_port = free_port()
    audit_settings = system.settings.with_(metrics_addr=f"127.0.0.1:{audit_port}")
    with service_process(
        "processor",
        audit_settings,
        system.processor.log_path.parent / "audit.log",
        "audit",
        "--every",
        "1",
        "--wait",
        "30",
    ) as auditor:
        wait_until(
            lambda: (
                value(scrape_or_empty(audit_port), "mysocial_audit_runs_total", result="ok") >= 1
            ),
            timeout=60,
            what="an audit round",
        )
        audited = scrape(audit_port)
        assert value(audited, "mysocial_audit_mismatches") == 0
        assert value(audited, "mysocial_audit_runs_total", result="mismatch") == 0
        audit_names = names(audit_port)
        auditor.terminate()
        assert auditor.wait(30) == 0

    # Every metric the shipped dashboard queries exists (deploy/grafana/mysocial.json).
    shown = set().union(audit_names, *(names(port) for port in ports.values()))
    dashboard = json.loads((PROJECT_ROOT / "deploy/grafana/mysocial.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:mysocial|grpc_server)_[a-z0-9_]+", target["expr"])
    }
    assert len(queried) > 20
    assert queried - shown == set(), "dashboard queries metrics nobody serves"
    scrape_config = (PROJECT_ROOT / "deploy/prometheus.yml").read_text()
    assert sorted(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", scrape_config)) == sorted(
        DEFAULT_PORTS.values()
    )

    # The same exposition in OpenMetrics, for scrapers that ask for it.
    status, content_type, body = http_get(
        ports["command"], "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    families = {family.name for family in openmetrics_families(body)}
    assert {"grpc_server_handled", "mysocial_command_produce_seconds"} <= families
