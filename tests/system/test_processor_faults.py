"""The processor under faults: SIGKILL at random moments of the commit cycle, an
instance joining mid-stream and another leaving without notice, a crash between
rankings. Counts must stay exact and the ranking must equal the audit's."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

from mysocial.config import Settings
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import command_service_pb2_grpc as cmd_grpc
from processor.audit import audit, wait_caught_up
from tests.support.helpers import auth, wait_until
from tests.support.services import ProcessorProc, command_service
from tests.support.trending import RankingWatcher, create, like
from tests.support.workload import Workload, check_exact


def test_exact_after_repeated_sigkill(proc_settings: Settings, log_dir: Path) -> None:
    processor = ProcessorProc(proc_settings, "a", log_dir)
    processor.start()
    total = 20_000
    kill_at = sorted({int(total * f) for f in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)})
    rng = random.Random(11)
    progress = {"sent": 0}
    stop = threading.Event()

    def killer() -> None:
        for mark in kill_at:
            while progress["sent"] < mark and not stop.is_set():
                time.sleep(0.01)
            if stop.is_set():
                return
            time.sleep(rng.random() * 0.3)  # a random moment within the commit cycle
            processor.kill()
            processor.start()

    thread = threading.Thread(target=killer)
    try:
        with command_service(proc_settings, log_dir) as addr:
            thread.start()
            workload = Workload(addr, seed=13, users=60)
            model = asyncio.run(workload.run(total, lambda n: progress.__setitem__("sent", n)))
            thread.join(60)
            assert workload.errors == []
        assert processor.kills >= 5
        check_exact(proc_settings, model)
    finally:
        stop.set()
        processor.terminate()


def test_scale_out_and_kill_one_instance(proc_settings: Settings, log_dir: Path) -> None:
    first = ProcessorProc(proc_settings, "a", log_dir)
    second = ProcessorProc(proc_settings, "b", log_dir)
    first.start()
    progress = {"sent": 0}
    try:
        with command_service(proc_settings, log_dir) as addr:
            workload = Workload(addr, seed=21, users=60)

            def conductor() -> None:
                while progress["sent"] < 5000:
                    time.sleep(0.01)
                second.start()  # joins mid-stream: partitions are split
                while progress["sent"] < 12000:
                    time.sleep(0.01)
                first.kill()  # leaves without notice: the other takes over

            thread = threading.Thread(target=conductor)
            thread.start()
            model = asyncio.run(workload.run(20_000, lambda n: progress.__setitem__("sent", n)))
            thread.join(60)
            assert workload.errors == []
        assert first.kills == 1 and second.alive()
        check_exact(proc_settings, model)
        assert "partitions_assigned" in second.log_path.read_text()
    finally:
        first.terminate()
        second.terminate()


def test_ranking_after_sigkill_equals_the_audit(
    trend_settings: Settings,
    running: tuple[cmd_grpc.CommandServiceStub, ProcessorProc, RankingWatcher],
) -> None:
    stub, processor, watcher = running
    posts = [create(stub, f"maker{n}") for n in range(8)]
    for n, post in enumerate(posts):
        for i in range(3 + 2 * n):
            like(stub, post, f"reader{i}")
        if n % 2:
            stub.AddComment(
                cmd.AddCommentRequest(post_id=post, text="yes"), metadata=auth(f"reader{n}")
            )
    processor.kill()
    restarted = time.monotonic()
    processor.start()
    for i in range(10):  # more engagement after the restart
        like(stub, posts[0], f"late{i}")
    assert wait_caught_up(trend_settings, 60)

    def restarted_ranking_has_late_likes() -> bool:
        return any(
            t > restarted and any(e.post_id == posts[0] and e.like_count == 13 for e in r.entries)
            for t, r in watcher.rankings
        )

    wait_until(restarted_ranking_has_late_likes, timeout=30, what="a ranking after the restart")
    report = audit(trend_settings)
    assert report.ok, report.trending_mismatches + report.mismatches
    assert report.trending_entries == len(posts)
