"""The processor's watchdog ends a process whose loop stopped beating, or whose client
call outlasted its own bound (no Kafka: a child process that beats, then blocks)."""

from __future__ import annotations

import subprocess
import sys

from mysocial.config import PROJECT_ROOT

STOPS_BEATING = """
import time
from processor.watchdog import Watchdog
dog = Watchdog(1.0).start()
for _ in range(4):  # beating: alive past the limit
    time.sleep(0.5)
    dog.beat()
print("beating done", flush=True)
time.sleep(30)  # stuck
"""

CALL_OUTLASTS_ITS_BOUND = """
import time
from processor.watchdog import Watchdog
dog = Watchdog(60.0, grace_s=1.0).start()
with dog.bounded("quick", 0.5):  # returns within its bound: nothing happens
    time.sleep(1.0)
print("bounded call done", flush=True)
with dog.bounded("flush", 0.5):
    time.sleep(30)  # blocked in the library, far inside the loop's limit
"""


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_a_loop_that_stops_beating_is_ended_with_one_line() -> None:
    done = run_child(STOPS_BEATING)
    assert done.returncode == 1
    assert "beating done" in done.stdout
    assert "processor_stuck" in done.stdout + done.stderr
    assert "line 9" in done.stdout  # where the loop was: the sleep


def test_a_call_that_outlasts_its_bound_is_ended_before_the_loops_limit() -> None:
    done = run_child(CALL_OUTLASTS_ITS_BOUND)
    out = done.stdout + done.stderr
    assert done.returncode == 1
    assert "bounded call done" in done.stdout
    assert "processor_stuck" in out
    assert "flush (bound 0.5s)" in out
    assert "quick" not in out.split("bounded call done")[1]
    assert "line 9" in out  # where: the blocked call
