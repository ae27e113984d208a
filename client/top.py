"""`mysocial top`: a live terminal view of the running system, from its /metrics.

Every second it reads the three services' Prometheus endpoints (mysocial.metrics) and
shows what changed since the previous read: commands accepted per second, the
processor's events per second and lag, freshness (event to committed, and applied to
streamed) as p50/p99 of the histograms' new observations, open streams and their
messages per second, and errors by status code. A process that does not answer is
shown as down; the rest keep updating.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mysocial.metrics import DEFAULT_PORTS

Labels = frozenset[tuple[str, str]]
SERVICES = ("command", "query", "processor")
COMMANDS = "mysocial.v1.CommandService"
QUERIES = "mysocial.v1.QueryService"


@dataclass
class Scrape:
    """One read of every process: samples by (name, labels); None = did not answer."""

    at: float
    samples: dict[str, dict[tuple[str, Labels], float] | None] = field(default_factory=dict)

    def total(self, service: str, name: str, **labels: str) -> float:
        """Sum of name's samples in service whose labels include `labels`."""
        got = self.samples.get(service) or {}
        wanted = set(labels.items())
        return sum(v for (n, ls), v in got.items() if n == name and wanted <= ls)

    def by(self, service: str, name: str, label: str, **labels: str) -> dict[str, float]:
        got = self.samples.get(service) or {}
        wanted = set(labels.items())
        out: dict[str, float] = {}
        for (n, ls), v in got.items():
            if n == name and wanted <= ls:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def buckets(self, service: str, name: str) -> dict[float, float]:
        """A histogram's cumulative bucket counts (summed over its other labels)."""
        return {float(le): v for le, v in self.by(service, f"{name}_bucket", "le").items() if le}


def read(urls: Mapping[str, str], timeout: float = 1.0) -> Scrape:
    scrape = Scrape(time.monotonic())
    for service, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:
                body = reply.read().decode()
        except OSError:
            scrape.samples[service] = None
            continue
        scrape.samples[service] = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
    return scrape


def quantile(q: float, before: Mapping[float, float], after: Mapping[float, float]) -> float:
    """The q-quantile of the observations between two reads of a histogram's cumulative
    buckets, interpolated within its bucket as Prometheus' histogram_quantile does
    (NaN when nothing was observed; the largest finite bound when it falls in +Inf)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def rate(before: float, after: float, seconds: float) -> float:
    """Per second; a counter that went down (its process restarted) counts from 0."""
    if seconds <= 0:
        return 0.0
    return (after - before if after >= before else after) / seconds


def frame(before: Scrape, after: Scrape) -> dict[str, Any]:
    """What the view shows, from two consecutive reads."""
    dt = after.at - before.at
    handled = "grpc_server_handled_total"

    def per_s(service: str, name: str, **labels: str) -> float:
        return rate(before.total(service, name, **labels), after.total(service, name, **labels), dt)

    def p(service: str, name: str, q: float) -> float:
        return quantile(q, before.buckets(service, name), after.buckets(service, name)) * 1000

    errors: dict[str, float] = {}
    for service in ("command", "query"):
        now = after.by(service, handled, "grpc_code")
        then = before.by(service, handled, "grpc_code")
        for code, value in now.items():
            if code != "OK":
                errors[code] = errors.get(code, 0.0) + rate(then.get(code, 0.0), value, dt)
    return {
        "up": {s: after.samples.get(s) is not None for s in SERVICES},
        "ingest_per_s": per_s("command", handled, grpc_service=COMMANDS, grpc_code="OK"),
        "processor_events_per_s": per_s("processor", "mysocial_processor_events_consumed_total"),
        "processor_lag": after.total("processor", "mysocial_processor_consumer_lag"),
        "commits_per_s": per_s("processor", "mysocial_processor_commits_total"),
        "committed_ms": {
            "p50": p("processor", "mysocial_processor_freshness_seconds", 0.5),
            "p99": p("processor", "mysocial_processor_freshness_seconds", 0.99),
        },
        "streamed_ms": {
            "p50": p("query", "mysocial_query_stream_delay_seconds", 0.5),
            "p99": p("query", "mysocial_query_stream_delay_seconds", 0.99),
        },
        "read_model_lag": after.total("query", "mysocial_query_read_model_lag"),
        "subscribers": after.by("query", "mysocial_query_subscribers", "kind"),
        "stream_messages_per_s": per_s("query", "grpc_server_msg_sent_total"),
        "errors_per_s": {code: v for code, v in sorted(errors.items()) if v > 0},
    }


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def render(f: Mapping[str, Any]) -> Table:
    table = Table(title="mysocial top", show_header=False, expand=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    up = ", ".join(f"{s} {'up' if ok else '[red]down[/red]'}" for s, ok in f["up"].items())
    rows: Iterable[tuple[str, str]] = [
        ("processes", up),
        ("commands accepted", f"{f['ingest_per_s']:.0f}/s"),
        ("processor", f"{f['processor_events_per_s']:.0f} events/s, lag {f['processor_lag']:.0f}"),
        ("transactions", f"{f['commits_per_s']:.1f} commits/s"),
        (
            "event -> committed",
            f"p50 {_ms(f['committed_ms']['p50'])}, p99 {_ms(f['committed_ms']['p99'])}",
        ),
        (
            "applied -> streamed",
            f"p50 {_ms(f['streamed_ms']['p50'])}, p99 {_ms(f['streamed_ms']['p99'])}",
        ),
        ("read-model lag", f"{f['read_model_lag']:.0f} records"),
        (
            "streams",
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(f["subscribers"].items())) or "none",
        ),
        ("stream messages", f"{f['stream_messages_per_s']:.0f}/s"),
        (
            "errors",
            ", ".join(f"{c} {v:.1f}/s" for c, v in f["errors_per_s"].items()) or "none",
        ),
    ]
    for what, text in rows:
        table.add_row(what, text)
    return table


def run(urls: Mapping[str, str], once: bool, as_json: bool, interval: float = 1.0) -> int:
    """Refresh every interval until Ctrl-C; once: print one frame and return."""
    before = read(urls)
    if once:
        time.sleep(interval)
        f = frame(before, read(urls))
        if as_json:
            print(json.dumps(_finite(f), indent=2))
        else:
            Console().print(render(f))
        return 0 if all(f["up"].values()) else 1
    with Live(render(frame(before, before)), refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            after = read(urls)
            live.update(render(frame(before, after)))
            before = after


def _finite(value: Any) -> Any:
    """NaN (nothing observed) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def default_urls(host: str = "127.0.0.1") -> dict[str, str]:
    return {s: f"http://{host}:{DEFAULT_PORTS[s]}/metrics" for s in SERVICES}
