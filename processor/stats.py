"""The periodic `processor_stats` log line: what an operator reads to see progress."""

from __future__ import annotations

import time
from collections.abc import Callable

from mysocial.log import get_logger

log = get_logger("processor")

INTERVAL_S = 10.0


class StatsLog:
    """Counts consumed records; every INTERVAL_S logs them with the other counters."""

    def __init__(self, sources: list[Callable[[], dict[str, int]]]) -> None:
        self.sources = sources
        self.consumed = 0
        self.last_log = time.monotonic()
        self.last_consumed = 0

    def maybe_log(self) -> None:
        now = time.monotonic()
        elapsed = now - self.last_log
        if elapsed < INTERVAL_S:
            return
        fields: dict[str, int] = {}
        for source in self.sources:
            fields.update(source())
        rate = (self.consumed - self.last_consumed) / elapsed
        log.info("processor_stats", consumed=self.consumed, per_s=round(rate), **fields)
        self.last_log = now
        self.last_consumed = self.consumed
