"""The processor's watchdog ends a process whose loop stopped beating (no Kafka: a
child process that beats, then blocks)."""

from __future__ import annotations

import subprocess
import sys

from mysocial.config import PROJECT_ROOT

CHILD = """
import time
from processor.watchdog import Watchdog
dog = Watchdog(1.0)
for _ in range(4):  # beating: alive past the limit
    time.sleep(0.5)
    dog.beat()
print("beating done", flush=True)
time.sleep(30)  # stuck
"""


def test_a_loop_that_stops_beating_is_ended_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert "beating done" in done.stdout
    assert "processor_stuck" in done.stdout + done.stderr
    assert "line 9" in done.stdout  # where the loop was: the sleep
