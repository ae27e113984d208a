"""Log set-up: library records (grpc, asyncio) come out as one JSON event per line.

Run in a child interpreter: configure() replaces the process's logging handlers,
which pytest's own capture uses.
"""

from __future__ import annotations

import json
import subprocess
import sys

from mysocial.config import PROJECT_ROOT

SCRIPT = """
import asyncio, logging
from mysocial import log
log.configure("info", "json", "demo")
grpc_log = logging.getLogger("grpc._cython.cygrpc")
try:
    raise asyncio.CancelledError()
except asyncio.CancelledError:
    grpc_log.exception(
        "Exception not handled by _handle_exceptions in servicer method [%s]",
        "/grpc.health.v1.Health/Watch",
    )
try:
    raise ValueError("boom")
except ValueError:
    grpc_log.exception("Exception not handled by _handle_exceptions in servicer method [/x]")
logging.getLogger("asyncio").info("below the library threshold")
logging.getLogger("asyncio").warning("library warning")
"""


def _lines() -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Every line is one JSON event: a stray traceback line would fail to parse.
    return [json.loads(line) for line in out.stderr.splitlines()]


def test_library_records_are_single_json_events_and_shutdown_cancels_are_info() -> None:
    lines = _lines()
    assert [(e["event"], e["level"]) for e in lines] == [
        ("rpc_cancelled_at_exit", "info"),
        ("Exception not handled by _handle_exceptions in servicer method [/x]", "error"),
        ("library warning", "warning"),
    ]
    cancelled, failed, _ = lines
    assert cancelled["rpc"] == "/grpc.health.v1.Health/Watch"
    assert "exception" not in cancelled
    assert cancelled["service"] == "demo" and cancelled["logger"] == "grpc._cython.cygrpc"
    # Any other exception keeps its level and its traceback, inside the one line.
    assert "ValueError: boom" in str(failed["exception"])
