"""T4 freshness, T5 knee and T5b capacity: the whole system on this machine under open-loop load.

Everything runs here at once: broker, processor, command service, query service, the
load generator (`client.loadgen`, separate processes) and a probe process. The
probe likes a dedicated post ~20 times a second and watches it with WatchPosts; its
latency is the time from LikePost returning to the stream delivering that count.
Consumer lag of the processor group is sampled at the start and end of each window:
a rate is sustainable when the load generator achieved it, lag did not grow, and the
probe's p99 stayed within the target.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench import stages
from bench.harness import Child, free_ports
from client import loadgen
from mysocial.auth import mint_token
from mysocial.config import DEV_JWT_SECRET, Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import group_lag
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from mysocial.v1 import query_service_pb2 as q
from mysocial.v1 import query_service_pb2_grpc as q_grpc

P99_TARGET_MS = 100.0


class RunningSystem:
    """Processor + command service (N workers) + query service as processes."""

    def __init__(self, settings: Settings, log_dir: Path, command_workers: int = 2) -> None:
        command_port, query_port, *metrics_ports = free_ports(5)
        self.settings = settings.with_(
            command_addr=f"127.0.0.1:{command_port}",
            query_addr=f"127.0.0.1:{query_port}",
            command_workers=command_workers,
        )
        # Each service serves /metrics: the per-stage breakdown reads its histograms.
        roles = ("processor", "command", "query")
        addrs = {r: f"127.0.0.1:{port}" for r, port in zip(roles, metrics_ports, strict=True)}
        self.metrics_urls = {r: f"http://{addr}/metrics" for r, addr in addrs.items()}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children = [
            Child(module, self.settings.with_(metrics_addr=addrs[role]), log_dir / f"{role}.log")
            for module, role in (
                ("processor", "processor"),
                ("command_service", "command"),
                ("query_service", "query"),
            )
        ]
        self.children[0].wait_event("partitions_assigned", 120)
        self.children[2].wait_event("read_models_ready", 120)
        grpc.channel_ready_future(grpc.insecure_channel(self.settings.command_addr)).result(60)

    def lag(self) -> int:
        s = self.settings
        names = [s.topic(topics.POSTS), s.topic(topics.LIKES), s.topic(topics.COMMENTS)]
        return group_lag(s, s.topic("mysocial.processor"), names)

    def rss(self) -> dict[str, int]:
        return {c.log.stem: c.rss_bytes() for c in self.children}

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _probe(command_addr: str, query_addr: str, seconds: float, rate: float, out: Any) -> None:
    """Like a probe post at `rate`/s and time LikePost return → WatchPosts delivery."""
    md = (("authorization", f"Bearer {mint_token('probe-author', DEV_JWT_SECRET, 3600)}"),)
    commands = cmd_grpc.CommandServiceStub(grpc.insecure_channel(command_addr))
    queries = q_grpc.QueryServiceStub(grpc.insecure_channel(query_addr))
    post = commands.CreatePost(cmd.CreatePostRequest(caption="probe"), metadata=md, timeout=30)
    delivered: dict[int, float] = {}
    stream = queries.WatchPosts(
        q.WatchPostsRequest(post_ids=[post.post_id], consistency_token=post.consistency_token)
    )

    def read() -> None:
        try:
            for message in stream:
                delivered.setdefault(message.post.like_count, time.perf_counter())
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready_by = time.perf_counter() + 60
    while 0 not in delivered:
        if time.perf_counter() > ready_by:  # the stream never opened: no samples
            stream.cancel()
            out.put(([], -1))
            return
        time.sleep(0.01)
    acked: list[float] = []
    start = time.perf_counter()
    n = failed = 0
    while time.perf_counter() - start < seconds:
        due = start + n / rate
        if time.perf_counter() < due:
            time.sleep(due - time.perf_counter())
        user_md = (("authorization", f"Bearer {mint_token(f'probe{n}', DEV_JWT_SECRET, 3600)}"),)
        n += 1
        try:
            commands.LikePost(
                cmd.LikePostRequest(post_id=post.post_id), metadata=user_md, timeout=5
            )
        except grpc.RpcError as exc:
            # Past capacity (T5b) a like may be refused or fail. Refused (admission
            # control, quota) means not written: not a sample, the counts stay aligned.
            # Any other failure may have been written after all, which would shift
            # the count each later sample waits for: the probe stops sampling there.
            failed += 1
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                continue
            break
        acked.append(time.perf_counter())
    deadline = time.perf_counter() + 30
    while len(acked) not in delivered and time.perf_counter() < deadline:
        time.sleep(0.01)
    stream.cancel()
    latencies = []
    for i, t_ack in enumerate(acked, start=1):
        seen = min((t for c, t in delivered.items() if c >= i), default=None)
        if seen is not None:
            latencies.append(max(0.0, seen - t_ack) * 1000)
    out.put((latencies, failed))


def window(system: RunningSystem, rate: float, seconds: float) -> dict[str, Any]:
    """One load window at `rate`: probe latency, lag growth, achieved rate."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    s = system.settings
    spec = loadgen.LoadSpec(
        addr=s.command_addr,
        rate=rate,
        duration=seconds,
        workers=2,
        secret=DEV_JWT_SECRET,
        seed_posts=50,
    )
    load: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: load.update(loadgen.run(spec, progress=False)))
    runner.start()
    time.sleep(min(5.0, seconds / 4))  # seed posts created, load ramped up
    lag_start = system.lag()
    breakdown = stages.Window(system.metrics_urls)
    probe = ctx.Process(
        target=_probe, args=(s.command_addr, s.query_addr, seconds * 0.6, 20.0, out)
    )
    probe.start()
    try:
        latencies, probe_failures = out.get(timeout=seconds + 120)
    except queue.Empty:  # the probe process died: the window has no latency samples
        latencies, probe_failures = [], -1
    where = breakdown.finish()
    probe.join(30)
    if probe.is_alive():
        probe.kill()
    runner.join(seconds + 120)
    lag_end = system.lag()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]
            if latencies
            else float("inf")
        )

    accepted = load.get("accepted_per_s", 0.0)
    result = {
        "rate": rate,
        "accepted_per_s": accepted,
        "errors": load.get("errors", {}),
        "command_p99_ms": load.get("latency_ms", {}).get("p99"),
        "probe_samples": len(latencies),
        "probe_failures": probe_failures,  # failed LikePosts (-1: the probe died)
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "lag_start": lag_start,
        "lag_end": lag_end,
        "rss": system.rss(),
        "breakdown": where,
    }
    # Lag may grow by at most ~1 s of input over the window (keeps_up).
    result["sustainable"] = keeps_up(result) and result["p99_ms"] <= P99_TARGET_MS
    return result


def _bisect(low: float, high: float, steps: int, holds: Callable[[float], bool]) -> float:
    """Halve the gap between a rate that held and one that failed `steps` times."""
    for _ in range(steps):
        mid = float(round((low + high) / 2))
        if mid in (low, high):
            break
        low, high = (mid, high) if holds(mid) else (low, mid)
    return low


def knee(
    system: RunningSystem,
    rates: list[float],
    seconds: float,
    repeats: int = 2,
    bisect_steps: int = 2,
) -> dict[str, Any]:
    """T5: the highest sustainable rate. `rates` are tried in increasing order up to
    the first that fails; the gap between the last that held and it is then halved
    `bisect_steps` times. A rate holds only if each of its `repeats` windows does:
    one window's p99 varies by tens of ms on two shared cores, and one lucky window
    must not decide the knee."""
    tried: list[dict[str, Any]] = []

    def holds(rate: float) -> bool:
        results = [window(system, rate, seconds) for _ in range(repeats)]
        tried.extend(results)
        return all(r["sustainable"] for r in results)

    best, failed = 0.0, None
    for rate in sorted(rates):
        if not holds(rate):
            failed = rate
            break
        best = rate
    if failed is not None:
        best = _bisect(best, failed, bisect_steps, holds)
    return {"knee_per_s": best, "windows": tried, "repeats": repeats}


def keeps_up(w: dict[str, Any]) -> bool:
    """The system took the window's rate and its lag did not grow (latency aside)."""
    return bool(
        w["accepted_per_s"] >= 0.95 * w["rate"]
        and w["lag_end"] - w["lag_start"] <= max(100.0, w["rate"])
    )


def capacity(
    system: RunningSystem,
    first: dict[str, Any],
    seconds: float,
    ceiling: float = 6400.0,
    bisect_steps: int = 2,
) -> dict[str, Any]:
    """T5b: the highest rate the whole system keeps up with, whatever the latency.

    `first` is a window already measured (2x the knee): rates double from it until one
    does not keep up (or `ceiling`), then the gap is halved `bisect_steps` times. One
    window per rate: lag growth over a minute is a steadier signal than a p99. A rate
    the load generator could not offer counts as not kept up, so the figure is bounded
    by the front door as the launch-day mix reaches it, and says so (`limited_by`)."""
    tried = [first]
    best, failed = (first["rate"], None) if keeps_up(first) else (0.0, first["rate"])
    rate = first["rate"]
    while failed is None and rate * 2 <= ceiling:
        rate *= 2
        w = window(system, rate, seconds)
        tried.append(w)
        if keeps_up(w):
            best = rate
        else:
            failed = rate
    if failed is not None:

        def held(mid: float) -> bool:
            tried.append(window(system, mid, seconds))
            return keeps_up(tried[-1])

        best = _bisect(best, failed, bisect_steps, held)
    over = [w for w in tried if not keeps_up(w)]
    limited_by = None
    if over:
        w = min(over, key=lambda x: x["rate"])
        limited_by = "ingest" if w["accepted_per_s"] < 0.95 * w["rate"] else "processing"
    return {"capacity_per_s": best, "windows": tried, "limited_by": limited_by}
