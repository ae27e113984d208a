"""A test's stand-in for `make run`'s supervisor: restarts a process that exited on
its own (the processor stops on fatal errors by design) and reports each restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Watched:
    name: str
    alive: Callable[[], bool]
    start: Callable[[], None]


@dataclass
class Supervisor:
    """Polls its processes every `interval` seconds on a thread while running."""

    watched: list[Watched]
    interval: float = 0.2
    restarts: list[tuple[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            for w in self.watched:
                if not self._stop.is_set() and not w.alive():
                    self.restarts.append((w.name, round(time.monotonic() - started, 1)))
                    w.start()
