"""Last line of defence against a processor that is alive but does nothing.

Every call the loop makes is bounded (transactional calls by checkpoint.ATTEMPT_S and
the transaction's deadline, polls by the commit interval), so an iteration that has not
finished after `limit_s` is stuck: blocked inside a client library, deaf even to
SIGTERM, whose Python handler only runs between bytecodes. The watchdog, a thread of
its own, then logs one `processor_stuck` line with where the loop is and ends the
process with exit code 1, for its supervisor to restart it; the partitions continue
from the last commit, as after any crash. It was added after a processor stayed blocked
in a producer flush for minutes while a broker's disk was full.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from mysocial.log import get_logger

log = get_logger("processor.watchdog")

# Longer than the longest bounded wait inside one iteration: the committed offsets of a
# new assignment, asked again while the cluster does not answer for up to
# processor_offsets_wait_ms (120 s by default), then the check for a transaction that
# blocks them (OFFSETS_CHECK_S); the engine raises the limit with a longer wait.
STUCK_AFTER_S = 150.0
OFFSETS_CHECK_S = 60.0


class Watchdog:
    """Ends the process when beat() has not been called for limit_s seconds."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last = time.monotonic()
        self.watched = threading.get_ident()
        self.thread = threading.Thread(target=self._run, name="processor-watchdog", daemon=True)
        self.thread.start()

    def beat(self) -> None:
        self.last = time.monotonic()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            stuck_s = time.monotonic() - self.last
            if stuck_s > self.limit_s:
                frame = sys._current_frames().get(self.watched)
                where = traceback.format_stack(frame)[-6:] if frame is not None else []
                log.error(
                    "processor_stuck",
                    seconds=round(stuck_s, 1),
                    where=" | ".join(line.strip().replace("\n", " ") for line in where),
                    hint="the supervisor restarts it; its partitions continue from the last commit",
                )
                os._exit(1)
