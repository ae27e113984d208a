"""`mysocial loadgen`: launch-day traffic against the real command service.

Open loop: each worker process schedules requests at its share of the target rate
and fires them without waiting for earlier ones (latency is measured from the
scheduled time, so a slow server cannot slow the arrival rate and hide its own
latency). The mix: many users, posts created continuously, likes and comments over
posts with a Zipf-like popularity (a few hot posts get most of the traffic), unlikes
and deletes at a small rate. The parent prints progress every second and a summary:
accepted/s, errors by status code, latency percentiles of the accepted commands.

It honours RetryInfo as a well-behaved client would: a user refused for its quota
sends nothing more until the delay has passed, and a refusal for the whole service
(overload, Kafka away) pauses that worker for the delay; what was due meanwhile is
counted as held back, not sent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from mysocial.auth import mint_token
from mysocial.status import error_details
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc

# Share of each command in the mix (sums to 1).
MIX = {
    "like": 0.70,
    "comment": 0.15,
    "unlike": 0.06,
    "create": 0.05,
    "delete_comment": 0.03,
    "delete_post": 0.01,
}


REFUSALS = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True)
class LoadSpec:
    addr: str
    rate: float  # requests per second, all workers together
    duration: float  # seconds
    workers: int = 2
    users: int = 10_000
    seed_posts: int = 200
    zipf: float = 1.1
    max_in_flight: int = 2000
    secret: str = ""
    seed: int = 1
    only: str = ""  # a single command kind (e.g. "like"), or the mix
    user_prefix: str = "u"  # user ids are <prefix><n>: two loads can keep apart
    honour_retry_info: bool = True  # False: an abusive client, sending regardless


@dataclass
class Stats:
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    skipped: int = 0  # not sent: too many in flight (the server fell behind)
    held_back: int = 0  # not sent: a RetryInfo said to wait
    no_retry_info: int = 0  # refused (RESOURCE_EXHAUSTED, UNAVAILABLE) without RetryInfo

    def merge(self, other: Stats) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.errors.update(other.errors)
        self.latencies_ms += other.latencies_ms
        self.skipped += other.skipped
        self.held_back += other.held_back
        self.no_retry_info += other.no_retry_info


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


class _Worker:
    def __init__(self, spec: LoadSpec, index: int, out: Any) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed * 1000 + index)
        self.out = out
        self.tokens: dict[str, tuple[tuple[str, str], ...]] = {}
        self.posts: list[tuple[str, str]] = []  # (post id, author)
        self.comments: list[tuple[str, str, str]] = []  # (post id, comment id, author)
        self.stats = Stats()
        self.in_flight = 0
        self.quiet_until = 0.0  # a refusal of the service's own: nobody sends until then
        self.user_quiet: dict[str, float] = {}  # a user refused for its quota: until then

    def _md(self, user: str) -> tuple[tuple[str, str], ...]:
        md = self.tokens.get(user)
        if md is None:
            md = (("authorization", f"Bearer {mint_token(user, self.spec.secret, 24 * 3600)}"),)
            self.tokens[user] = md
        return md

    def _post(self) -> tuple[str, str]:
        n = len(self.posts)
        rank = min(n - 1, int(n * self.rng.random() ** (1 + self.spec.zipf)))
        return self.posts[n - 1 - rank]

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.spec.addr) as channel:
            stub = cmd_grpc.CommandServiceStub(channel)
            for i in range(self.spec.seed_posts):
                user = f"{self.spec.user_prefix}{self.rng.randrange(self.spec.users)}"
                resp = await stub.CreatePost(
                    cmd.CreatePostRequest(caption=f"seed {i}"), metadata=self._md(user), timeout=30
                )
                self.posts.append((resp.post_id, user))
            share = self.spec.rate / self.spec.workers
            start = time.perf_counter()
            last_report = start
            n = 0
            tasks: set[asyncio.Task[None]] = set()
            while True:
                now = time.perf_counter()
                if now - start >= self.spec.duration:
                    break
                due = start + n / share
                if now < due:
                    await asyncio.sleep(min(due - now, 0.01))
                    continue
                n += 1
                if now < self.quiet_until:
                    self.stats.held_back += 1
                    continue
                if self.in_flight >= self.spec.max_in_flight:
                    self.stats.skipped += 1
                    continue
                task = asyncio.create_task(self._one(stub, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if now - last_report >= 1.0:
                    self._report()
                    last_report = now
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            self._report()

    def _report(self) -> None:
        self.out.put(self.stats)
        self.stats = Stats()

    def _pick(self) -> str:
        if self.spec.only:
            return self.spec.only
        r = self.rng.random()
        for kind, share in MIX.items():
            r -= share
            if r < 0:
                return kind
        return "like"

    async def _one(self, stub: cmd_grpc.CommandServiceAsyncStub, scheduled: float) -> None:
        kind = self._pick()
        user = f"{self.spec.user_prefix}{self.rng.randrange(self.spec.users)}"
        if self.user_quiet.get(user, 0.0) > time.perf_counter():
            self.stats.held_back += 1
            return
        self.in_flight += 1
        self.stats.sent += 1
        try:
            if kind == "create":
                resp = await stub.CreatePost(
                    cmd.CreatePostRequest(caption="launch day!"),
                    metadata=self._md(user),
                    timeout=30,
                )
                self.posts.append((resp.post_id, user))
            elif kind in ("like", "unlike"):
                post_id, _ = self._post()
                if kind == "like":
                    await stub.LikePost(
                        cmd.LikePostRequest(post_id=post_id), metadata=self._md(user), timeout=30
                    )
                else:
                    await stub.UnlikePost(
                        cmd.UnlikePostRequest(post_id=post_id), metadata=self._md(user), timeout=30
                    )
            elif kind == "comment":
                post_id, _ = self._post()
                added = await stub.AddComment(
                    cmd.AddCommentRequest(post_id=post_id, text="congrats on the launch"),
                    metadata=self._md(user),
                    timeout=30,
                )
                self.comments.append((post_id, added.comment_id, user))
            elif kind == "delete_comment" and self.comments:
                post_id, comment_id, author = self.comments.pop(
                    self.rng.randrange(len(self.comments))
                )
                await stub.DeleteComment(
                    cmd.DeleteCommentRequest(post_id=post_id, comment_id=comment_id),
                    metadata=self._md(author),
                    timeout=30,
                )
            elif kind == "delete_post" and len(self.posts) > self.spec.seed_posts:
                post_id, author = self.posts.pop()  # the newest: hot posts stay
                await stub.DeletePost(
                    cmd.DeletePostRequest(post_id=post_id), metadata=self._md(author), timeout=30
                )
            else:
                post_id, _ = self._post()
                await stub.LikePost(
                    cmd.LikePostRequest(post_id=post_id), metadata=self._md(user), timeout=30
                )
            self.stats.ok += 1
            # Latency of accepted commands only: a refusal is fast by design.
            self.stats.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
        except grpc.aio.AioRpcError as exc:
            self.stats.errors[exc.code().name] += 1
            details = error_details(exc)
            if exc.code() in REFUSALS and not details.retry_after_s:
                self.stats.no_retry_info += 1
            if details.retry_after_s and self.spec.honour_retry_info:
                until = time.perf_counter() + details.retry_after_s
                if details.reason == "QUOTA_EXCEEDED":
                    self.user_quiet[user] = until
                else:
                    self.quiet_until = max(self.quiet_until, until)
        finally:
            self.in_flight -= 1


def _worker_main(spec: LoadSpec, index: int, out: Any) -> None:
    asyncio.run(_Worker(spec, index, out).run())


def run(spec: LoadSpec, progress: bool = True, keep_latencies: bool = False) -> dict[str, Any]:
    """Run the load; returns the summary (and prints progress if asked). With
    keep_latencies, every acknowledged command's latency too (sorted, ms), so a caller
    can pool several windows' calls before it takes a percentile."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(spec, i, out)) for i in range(spec.workers)]
    for p in procs:
        p.start()
    total = Stats()
    window = Stats()
    started = time.perf_counter()
    last = started
    while any(p.is_alive() for p in procs) or not out.empty():
        try:
            part = out.get(timeout=0.2)
            total.merge(part)
            window.merge(part)
        except queue.Empty:
            pass
        now = time.perf_counter()
        if progress and now - last >= 1.0:
            lat = sorted(window.latencies_ms)
            print(
                f"[{now - started:5.1f}s] sent {window.sent / (now - last):7.0f}/s  "
                f"ok {window.ok / (now - last):7.0f}/s  errors {sum(window.errors.values()):5d}  "
                f"p50 {percentile(lat, 50):6.1f} ms  p99 {percentile(lat, 99):6.1f} ms",
                flush=True,
            )
            window = Stats()
            last = now
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    lat = sorted(total.latencies_ms)
    return {
        "target_rate": spec.rate,
        "duration_s": spec.duration,
        "sent": total.sent,
        "accepted": total.ok,
        "accepted_per_s": total.ok / spec.duration,
        "errors": dict(total.errors),
        "skipped_in_flight_cap": total.skipped,
        "held_back_retry_info": total.held_back,
        "refused_without_retry_info": total.no_retry_info,
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "p99.9": percentile(lat, 99.9),
            "max": lat[-1] if lat else float("nan"),
        },
        "wall_s": elapsed,
        **({"latencies_ms": lat} if keep_latencies else {}),
    }


def print_summary(summary: dict[str, Any]) -> None:
    lat = summary["latency_ms"]
    print(
        f"\naccepted {summary['accepted']} of {summary['sent']} sent "
        f"({summary['accepted_per_s']:.0f}/s at target {summary['target_rate']:.0f}/s)\n"
        f"errors: {summary['errors'] or 'none'}; skipped (in-flight cap): "
        f"{summary['skipped_in_flight_cap']}; held back (RetryInfo): "
        f"{summary['held_back_retry_info']}\n"
        f"latency of accepted commands, ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
        f"p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  max {lat['max']:.1f}"
    )
