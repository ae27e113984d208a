"""What a projection is to the engine: a module with one small interface.

A projection consumes some topics (its `sources`, contract names), keeps per-task
state, and produces outputs inside the engine's transactions. The engine drives it:

- tasks:   `restorations(p, committed)` -> what to replay before task p runs;
           `start(p)` (RUNNING), `suspend(p)` (revoked: stop, may keep caches),
           `close(p)` (gone: drop everything of p);
- records: `apply(msgs, i)` handles msgs[i] and the following records it can, and
           returns the index of the first one it did not (another projection's);
- commit:  `prepare_commit(now)` produces outputs and changelog into the open
           transaction, `post_commit()` persists local state after Kafka committed,
           `abort()` forgets what the aborted transaction changed;
- timers:  `next_timer(now)` and `punctuate(now)` (returns True if it produced).

A new projection is a new module under processor/projections plus a line of wiring
in processor/engine.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Message, Producer

from mysocial.config import Settings
from processor.output import Output
from processor.restore import Restoration

# (full topic name, partition) -> offset of the next record to read.
Offsets = dict[tuple[str, int], int]


@dataclass
class Context:
    """What every projection shares within one instance."""

    settings: Settings
    producer: Producer
    output: Output
    clock: Callable[[], float]
    # (low, high) watermarks of a partition (to decide where a restore starts).
    watermarks: Callable[[str, int], tuple[int, int]]
    # Next offsets consumed in the open transaction (committed with it, then cleared).
    positions: Offsets = field(default_factory=dict)
    # Next offsets consumed so far, committed or not (flow control reads them).
    consumed: Offsets = field(default_factory=dict)

    def use(self, producer: Producer) -> None:
        """The producer the next transaction writes through (the engine alternates)."""
        self.producer = producer
        self.output.producer = producer

    def run_of(self, msgs: list[Message], start: int, topic: str) -> list[Message]:
        """The records of `topic` from msgs[start] up to the first record of another
        topic (or an error), each noted as consumed (it commits with the transaction)."""
        end = start
        positions, consumed = self.positions, self.consumed
        while end < len(msgs):
            msg = msgs[end]
            partition, offset = msg.partition(), msg.offset()
            if msg.topic() != topic or msg.error() is not None:
                break
            assert partition is not None and offset is not None
            positions[(topic, partition)] = offset + 1
            consumed[(topic, partition)] = offset + 1
            end += 1
        return msgs[start:end]


class Projection:
    """Base of every projection: the no-op behaviour of each hook."""

    name = "projection"
    sources: tuple[str, ...] = ()

    def restorations(self, partition: int, committed: Offsets) -> list[Restoration]:
        return []

    def start(self, partition: int) -> None:
        pass

    def suspend(self, partition: int) -> None:
        pass

    def close(self, partition: int) -> None:
        pass

    def apply(self, msgs: list[Message], start: int) -> int:
        raise NotImplementedError

    def prepare_commit(self, now: float) -> None:
        pass

    def post_commit(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def next_timer(self, now: float) -> float:
        """Seconds until punctuate() wants to run (inf: never)."""
        return math.inf

    def punctuate(self, now: float) -> bool:
        return False

    def stats(self) -> dict[str, int]:
        """Counters for the periodic stats log line."""
        return {}
