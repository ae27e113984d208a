"""Prometheus metrics and HTTP health of every process.

Each service declares its own metrics in its package on prometheus_client's default
registry; the gRPC ones every service shares are here (the names and labels of
go-grpc-prometheus, which dashboards for gRPC servers expect). `serve()` starts a
small HTTP server on a thread of its own, so a busy event loop does not delay a
scrape:

- `/metrics`: the exposition format (OpenMetrics when the scraper asks for it);
- `/healthz`: liveness, 200 while the process runs (a stuck processor loop ends the
  process through its watchdog, so "up" means "working");
- `/readyz`: readiness, 200 once the process serves (gRPC health SERVING, or the
  processor running its tasks), 503 before and while it stops.

The command service's workers are separate processes: its parent points
PROMETHEUS_MULTIPROC_DIR at a folder of its own before it starts them, the workers
write their values there (prometheus_client's multiprocess mode), and the parent
serves their sum.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from mysocial.config import Settings, split_addr
from mysocial.log import get_logger

log = get_logger("metrics")

DEFAULT_PORTS = {"command": 9464, "query": 9465, "processor": 9466, "audit": 9467}
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets from 0.5 ms to 10 s: commands take milliseconds, a stream lives long
# (its handling time is how long the client stayed).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_RPC = ("grpc_type", "grpc_service", "grpc_method")
GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _RPC)
GRPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code.", (*_RPC, "grpc_code")
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status.",
    _RPC,
    buckets=LATENCY_BUCKETS,
)
GRPC_SENT = Counter("grpc_server_msg_sent", "Stream messages sent by the server.", _RPC)
GRPC_IN_FLIGHT = Gauge(
    "grpc_server_in_flight", "RPCs started and not completed.", _RPC, multiprocess_mode="livesum"
)
SERVING = Gauge(
    "mysocial_serving",
    "1 while the process serves: gRPC health SERVING, or the processor running its tasks.",
    multiprocess_mode="livemax",
)
REJECTED = Counter(
    "mysocial_rpc_rejected",
    "Calls answered with an error, by its google.rpc.ErrorInfo reason.",
    ("grpc_service", "grpc_method", "grpc_code", "reason"),
)


class Rpc:
    """The metric children of one method, bound once (labels() costs a lock and a
    dict lookup per call otherwise)."""

    def __init__(self, kind: str, service: str, method: str) -> None:
        labels = (kind, service, method)
        self.service, self.method = service, method
        self.started = GRPC_STARTED.labels(*labels)
        self.handling = GRPC_HANDLING.labels(*labels)
        self.sent = GRPC_SENT.labels(*labels)
        self.in_flight = GRPC_IN_FLIGHT.labels(*labels)
        self._labels = labels
        self._handled: dict[str, Any] = {}

    def handled(self, code: str, seconds: float) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_HANDLED.labels(*self._labels, code)
        child.inc()
        self.handling.observe(seconds)
        self.in_flight.dec()

    def rejected(self, code: str, reason: str) -> None:
        REJECTED.labels(self.service, self.method, code, reason or "none").inc()


class ClientStats:
    """Per-topic record totals and per-partition lag from librdkafka's statistics JSON
    (its `stats_cb` runs inside poll on the client's thread; a scrape reads the last
    copy). For a read_committed consumer the lag is to the last stable offset."""

    def __init__(self, counter: str) -> None:
        self.counter = counter  # rxmsgs (consumer) or txmsgs (producer)
        self.lock = threading.Lock()
        self.totals: dict[str, int] = {}  # topic -> monotonic total
        self.last: dict[tuple[str, str, int], int] = {}  # (client, topic, partition)
        self.lag: dict[tuple[str, int], int] = {}

    def update(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        client = str(stats.get("name", ""))  # several clients may report into one
        lag: dict[tuple[str, int], int] = {}
        with self.lock:
            for topic, t in (stats.get("topics") or {}).items():
                for pid, p in (t.get("partitions") or {}).items():
                    partition = int(pid)
                    if partition < 0:  # librdkafka's internal UA partition
                        continue
                    key = (topic, partition)
                    now = int(p.get(self.counter, 0))
                    before = self.last.get((client, *key), 0)
                    # A partition object created again starts from 0: count it afresh.
                    self.totals[topic] = self.totals.get(topic, 0) + (
                        now - before if now >= before else now
                    )
                    self.last[(client, *key)] = now
                    if p.get("consumer_lag", -1) >= 0 and p.get("fetch_state") == "active":
                        lag[key] = int(p["consumer_lag"])
            self.lag = lag

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
        with self.lock:
            return dict(self.totals), dict(self.lag)


def metrics_addr(settings: Settings, service: str) -> tuple[str, int] | None:
    """Where this service's metrics are served (None: `off`)."""
    if settings.metrics_addr == "off":
        return None
    if settings.metrics_addr:
        return split_addr(settings.metrics_addr, "MYSOCIAL_METRICS_ADDR")
    return "127.0.0.1", DEFAULT_PORTS[service]


def multiprocess_registry() -> CollectorRegistry | None:
    """In a parent of worker processes (MULTIPROC_ENV set): a registry summing them."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return registry


class MetricsServer:
    """The HTTP server of /metrics, /healthz and /readyz, on a daemon thread."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self.httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(settings: Settings, service: str) -> MetricsServer | None:
    """Start serving this process's metrics and health (of its workers too, in
    multiprocess mode); None when configured `off`. A port already taken raises
    OSError naming the setting, for start-up to end with one line.
    """
    addr = metrics_addr(settings, service)
    if addr is None:
        return None
    source = multiprocess_registry() or REGISTRY

    def ready() -> bool:
        return (source.get_sample_value("mysocial_serving") or 0) > 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._answer(200, content_type, encoder(source))
            elif path == "/healthz":
                self._answer(200, "text/plain", b"ok\n")
            elif path == "/readyz":
                up = ready()
                self._answer(200 if up else 503, "text/plain", b"ready\n" if up else b"not ready\n")
            else:
                self._answer(404, "text/plain", b"not found: /metrics, /healthz, /readyz\n")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the log

    try:
        httpd = ThreadingHTTPServer(addr, Handler)
    except OSError as exc:
        raise OSError(f"MYSOCIAL_METRICS_ADDR {addr[0]}:{addr[1]}: {exc.strerror}") from exc
    httpd.daemon_threads = True
    server = MetricsServer(httpd)
    log.info("metrics_serving", addr=f"{addr[0]}:{server.port}", service=service)
    return server
