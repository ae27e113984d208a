"""Is the cluster reachable right now? A cheap periodic question, for health.

librdkafka hides a stalled broker: a connection to a SIGSTOPped (or partitioned)
broker stays open, no error callback fires, and requests simply wait, so a service
kept reporting SERVING while every command failed. The probe asks the cluster for
one topic's metadata through the service's own client every `interval_s`, on a
thread; a question unanswered within `timeout_s` means unreachable. Changes are
reported on the event loop, so a service turns NOT_SERVING within interval_s +
timeout_s of Kafka going away (3 s by default) and SERVING on the first answer
after it returns. One small request a second per process, whatever the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from mysocial.log import get_logger

log = get_logger("kafka.probe")

INTERVAL_S = 1.0
TIMEOUT_S = 2.0


class ReachabilityProbe:
    """Calls ask(timeout) every interval_s on a thread; on_change(reachable) runs on
    the loop whenever the answer changes (the first answer included)."""

    def __init__(
        self,
        name: str,
        ask: Callable[[float], None],
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[bool], None],
        *,
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        """ask(timeout) raises when the cluster did not answer within timeout."""
        self.name = name
        self.ask = ask
        self.loop = loop
        self.on_change = on_change
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.reachable: bool | None = None  # last answer, read on the probe thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing; on_change is not called after this returns (blocks: a probe
        in progress may take up to timeout_s)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        since = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            error = ""
            try:
                self.ask(self.timeout_s)
            except Exception as exc:  # KafkaException: timed out, transport, all brokers down
                error = str(exc)
            reachable = not error
            if reachable != self.reachable and not self._stop.is_set():
                now = time.monotonic()
                if reachable:
                    log.info("kafka_reachable", probe=self.name, after_s=round(now - since, 1))
                else:
                    log.warning("kafka_unreachable", probe=self.name, error=error)
                self.reachable, since = reachable, now
                with contextlib.suppress(RuntimeError):  # loop closed: nobody to tell
                    self.loop.call_soon_threadsafe(self._report, reachable)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _report(self, reachable: bool) -> None:
        if not self._stop.is_set():
            self.on_change(reachable)
