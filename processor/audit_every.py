"""`python -m processor audit --every SECONDS`: the audit as a long-running check.

Each round waits (up to --wait) for the processor to catch up, audits, and exposes
the result on /metrics (mysocial.metrics, default port 9467) for an alert: the last
round's mismatch count and when the audit last agreed. Under traffic that never lets
the processor catch up, a round is counted `unsettled` rather than reporting
mismatches that are only lag. SIGTERM/SIGINT end it between rounds (exit 0).
"""

from __future__ import annotations

import signal
import threading
import time

from prometheus_client import Counter, Gauge

from mysocial.config import Settings
from mysocial.log import get_logger
from mysocial.startup import metrics_or_exit
from processor.audit import audit, settle

log = get_logger("processor.audit")

MISMATCHES = Gauge(
    "mysocial_audit_mismatches",
    "Projection entries that differ from the recomputed truth, in the last audit that ran.",
)
RUNS = Counter(
    "mysocial_audit_runs",
    "Audit rounds by result: ok, mismatch, or unsettled (the processor did not catch up).",
    ["result"],
)
LAST_OK = Gauge("mysocial_audit_last_ok_timestamp_seconds", "When an audit last found no mismatch.")
DURATION = Gauge("mysocial_audit_duration_seconds", "How long the last audit took.")
for _result in ("ok", "mismatch", "unsettled"):
    RUNS.labels(_result)


def run_every(settings: Settings, every_s: float, wait_s: float, check_trending: bool) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    served = metrics_or_exit(settings, "audit")
    try:
        while not stop.is_set():
            began = time.monotonic()
            if not settle(settings, wait_s):
                RUNS.labels("unsettled").inc()
                log.warning("audit_unsettled", waited_s=wait_s)
            else:
                report = audit(settings, check_trending=check_trending)
                found = len(report.mismatches) + len(report.trending_mismatches)
                MISMATCHES.set(found)
                DURATION.set(time.monotonic() - began)
                RUNS.labels("ok" if report.ok else "mismatch").inc()
                if report.ok:
                    LAST_OK.set_to_current_time()
                log.info(
                    "audit_done",
                    ok=report.ok,
                    mismatches=found,
                    posts=report.posts_checked,
                    examples=(report.mismatches + report.trending_mismatches)[:3],
                )
            stop.wait(max(0.0, every_s - (time.monotonic() - began)))
        return 0
    finally:
        if served is not None:
            served.close()
