"""Last line of defence against a processor that is alive but does nothing.

Every call the loop makes is bounded (transactional calls by checkpoint.ATTEMPT_S and
the transaction's deadline, polls by the commit interval), so an iteration that has not
finished after `limit_s` is stuck: blocked inside a client library, deaf even to
SIGTERM, whose Python handler only runs between bytecodes. The watchdog, a thread of
its own, then logs one `processor_stuck` line with where the loop is and ends the
process with exit code 1, for its supervisor to restart it; the partitions continue
from the last commit, as after any crash. It was added after a processor stayed blocked
in a transactional call for minutes while a broker's disk was full.

A transactional call states its own bound (`bounded`): one that outlasts it by
CALL_GRACE_S is stuck, without waiting for the iteration's limit, which has to allow
for the longest legitimate wait (committed offsets through a cluster outage). The call
that blocks is librdkafka's send_offsets_to_transaction: it ignores its timeout while
the group coordinator moves (confluentinc/librdkafka#5456, #5511, open in 2.16), as when
a broker's disk fills up; the iteration's limit (180 s in the fault tests) let the
partitions sit that long.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from mysocial.config import Settings
from mysocial.log import get_logger

log = get_logger("processor.watchdog")

# Longer than the longest bounded wait inside one iteration: the committed offsets of a
# new assignment, asked again while the cluster does not answer for up to
# processor_offsets_wait_ms (120 s by default), then the check for a transaction that
# blocks them (OFFSETS_CHECK_S); the engine raises the limit with a longer wait.
STUCK_AFTER_S = 150.0
OFFSETS_CHECK_S = 60.0
# How far past its own timeout a client call may run (a slow delivery callback, a busy
# machine) before it counts as blocked inside the library.
CALL_GRACE_S = 30.0


class Watchdog:
    """Ends the process when beat() has not been called for limit_s seconds, or a call
    inside `bounded` outlasts its bound by grace_s."""

    def __init__(self, limit_s: float, grace_s: float = CALL_GRACE_S) -> None:
        self.limit_s = limit_s
        self.grace_s = grace_s
        self.last = time.monotonic()
        self.call: tuple[str, float, float] | None = None  # (what, its bound, stuck after)
        self.watched = threading.get_ident()
        self.thread: threading.Thread | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Watchdog:
        """The iteration's limit: past every wait a healthy iteration may make."""
        offsets_wait_s = settings.processor_offsets_wait_ms / 1000.0
        txn_timeout_s = settings.processor_transaction_timeout_ms / 1000.0
        return cls(max(STUCK_AFTER_S, 3 * txn_timeout_s, offsets_wait_s + OFFSETS_CHECK_S))

    def start(self) -> Watchdog:
        """Watch the calling thread from now on."""
        self.watched = threading.get_ident()
        self.last = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="processor-watchdog", daemon=True)
        self.thread.start()
        return self

    def beat(self) -> None:
        self.last = time.monotonic()

    @contextmanager
    def bounded(self, what: str, seconds: float) -> Iterator[None]:
        """A client call that promises to return within `seconds`."""
        outer = self.call  # a commit inside a rebalance callback nests in a poll
        self.call = (what, seconds, time.monotonic() + seconds + self.grace_s)
        try:
            yield
        finally:
            self.call = outer

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            call = self.call
            if call is not None and now > call[2]:
                self._stuck(
                    now - call[2] + call[1] + self.grace_s, f"{call[0]} (bound {call[1]:.1f}s)"
                )
            elif now - self.last > self.limit_s:
                self._stuck(now - self.last, "the loop")

    def _stuck(self, seconds: float, blocked: str) -> None:
        frame = sys._current_frames().get(self.watched)
        where = traceback.format_stack(frame)[-6:] if frame is not None else []
        log.error(
            "processor_stuck",
            seconds=round(seconds, 1),
            blocked=blocked,
            where=" | ".join(line.strip().replace("\n", " ") for line in where),
            hint="the supervisor restarts it; its partitions continue from the last commit",
        )
        os._exit(1)
