"""Reading whole partitions into a service's memory, then following them.

Both services keep views built from entire topics: the command service's directory
(which posts and comments exist) and the query service's read models. Each runs one
TailReader: a thread that assigns the given topics' partitions (no consumer group:
every process reads everything), notes each partition's end when it starts, decodes
records on its own thread and hands them to the event loop in batches. The loop
applies a batch before the next is read, so a slow loop slows the reading instead
of piling up memory. Once every partition has reached the end it had at the start,
the owner is told once that the view is caught up.

A dead reader is not survivable: the view would stop moving while the service kept
answering from it. Any exception on the reader thread (including one raised by the
owner's decode or apply callbacks) and any fatal Kafka error therefore ends the
reader with one error log line (`kafka_reader_failed`) and completes `failure`; the
services then go NOT_SERVING and exit non-zero so their supervisor restarts them
(see mysocial.rpc.run_until_stopped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from mysocial.kafka import consume_batch
from mysocial.kafka.connection import KafkaConnection
from mysocial.kafka.reader import partitions_of, watermarks
from mysocial.log import get_logger

log = get_logger("kafka.tail")

T = TypeVar("T")
Key = tuple[str, int]

# Seconds to wait for the broker's metadata and watermarks at start.
METADATA_TIMEOUT_S = 30.0
# How long one poll waits for the first record; also bounds how late a stop is seen.
POLL_S = 0.1


class ReaderFailed(RuntimeError):
    """The reader died before the view was caught up (already logged by the reader)."""


@dataclass(slots=True)
class Batch(Generic[T]):
    """What one poll read: decoded items in log order per partition, and the offset
    each partition touched will be read from next (end-of-partition events included,
    so a position reaches the end even when the last offsets are commit markers)."""

    items: list[T]
    positions: dict[Key, int]


class TailReader(Generic[T]):
    """Reads `topics` from per-partition start offsets into the owner's view on `loop`.

    decode(msg) runs on the reader thread for every record and returns an item, or
    None to skip the record; apply(batch) and on_caught_up() run on the loop, and
    `ready` is set there once caught up.
    `consumer_config` adds to (or overrides) the read_committed, no-commit defaults:
    each owner chooses its own fetch settings.
    """

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        connection: KafkaConnection,
        topics: Sequence[str],
        decode: Callable[[Message], T | None],
        apply: Callable[[Batch[T]], None],
        on_caught_up: Callable[[], None],
        *,
        starts: Mapping[Key, int] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        max_batch: int = 5000,
    ) -> None:
        """starts: where to begin per (topic, partition), an offset or OFFSET_BEGINNING;
        partitions not named start at the beginning (a partition added since the
        offsets were saved has to be read whole)."""
        for key, offset in (starts or {}).items():
            if offset < 0 and offset != OFFSET_BEGINNING:
                raise ValueError(f"start offset of {key} must be >= 0 or OFFSET_BEGINNING")
        self.name = name
        self.loop = loop
        self.topics = list(topics)
        self.decode = decode
        self.apply = apply
        self.on_caught_up = on_caught_up
        self.starts = dict(starts or {})
        self.max_batch = max_batch
        self.records = 0  # items handed over so far (read by log lines)
        self.ready = asyncio.Event()  # set on the loop once caught up, before on_caught_up
        # Completes (with the exception as its result) when the reader died; stays
        # pending after a requested stop.
        self.failure: asyncio.Future[BaseException] = loop.create_future()
        config: dict[str, Any] = {
            "group.id": f"mysocial.tail.{name}.unused",  # required; assign() uses no group
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        config.update(consumer_config or {})
        self.consumer = Consumer(connection.config(config))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading and close the consumer (blocks up to timeout: call off the loop)."""
        self._stop.set()
        if self._thread.ident is None:
            self.consumer.close()  # never started: the thread would have closed it
        else:
            self._thread.join(timeout)

    async def wait_caught_up(self, timeout: float) -> None:
        """Wait until the view is caught up, unless the reader dies first.

        Raises ReaderFailed if it died, TimeoutError after timeout.
        """
        waiter = asyncio.ensure_future(self.ready.wait())
        pending: set[asyncio.Future[Any]] = {waiter, self.failure}
        try:
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if self.failure in done:
            raise ReaderFailed(f"{self.name} failed: {self.failure.result()!r}")
        if waiter not in done:
            raise TimeoutError(f"{self.name} not caught up after {timeout}s")

    # -- reader thread ----------------------------------------------------------------------
    def _assign(self) -> dict[Key, int]:
        """Assign every partition of the topics; returns the end of each one to catch up on."""
        behind: dict[Key, int] = {}
        assignment = []
        for topic in self.topics:
            for p in partitions_of(self.consumer, topic, METADATA_TIMEOUT_S):
                start = self.starts.get((topic, p), OFFSET_BEGINNING)
                low, high = watermarks(self.consumer, topic, p, METADATA_TIMEOUT_S)
                if (low if start == OFFSET_BEGINNING else max(start, low)) < high:
                    behind[(topic, p)] = high
                assignment.append(TopicPartition(topic, p, start))
        self.consumer.assign(assignment)
        log.info(
            "kafka_reader_assigned",
            reader=self.name,
            partitions=len(assignment),
            behind=len(behind),
        )
        return behind

    def _run(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            log.exception("kafka_reader_failed", reader=self.name, error=repr(exc))
            self._call_soon(self._fail, exc)
        finally:
            self.consumer.close()

    def _read(self) -> None:
        behind: dict[Key, int] | None = self._assign()
        while not self._stop.is_set():
            if behind is not None and not behind:
                behind = None
                self._call_soon(self._caught_up)
            msgs = consume_batch(self.consumer, self.max_batch, POLL_S)
            if not msgs:
                continue
            items: list[T] = []
            positions: dict[Key, int] = {}
            for msg in msgs:
                key = (msg.topic() or "", msg.partition() or 0)
                offset = msg.offset() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        positions[key] = max(positions.get(key, 0), offset)
                        if behind is not None:
                            behind.pop(key, None)
                    elif err.fatal() or err.code() == KafkaError._FATAL:
                        raise KafkaException(err)  # the client is unusable: fail, get restarted
                    else:  # librdkafka retries these itself (broker down, leader moving)
                        log.warning("consume_error", reader=self.name, error=str(err))
                    continue
                positions[key] = offset + 1
                if behind:
                    end = behind.get(key)
                    if end is not None and offset + 1 >= end:
                        del behind[key]
                item = self.decode(msg)
                if item is not None:
                    items.append(item)
            if items or positions:
                self._hand_over(Batch(items, positions))
                self.records += len(items)

    def _hand_over(self, batch: Batch[T]) -> None:
        """Apply a batch on the loop and wait for it (back-pressure: one at a time).

        A plain callback and future, no coroutine and task per batch, which the loop
        would otherwise pay hundreds of times a second under load. An exception in
        apply is re-raised here: the view missed a batch, so the reader has failed.
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def apply() -> None:
            try:
                self.apply(batch)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self.loop.call_soon_threadsafe(apply)
        while not self._stop.is_set():
            try:
                done.result(POLL_S)
                return
            except concurrent.futures.TimeoutError:
                continue  # the loop may be busy, or stopping: look at the stop flag again

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self.loop.call_soon_threadsafe(callback, *args)

    def _caught_up(self) -> None:
        self.ready.set()
        self.on_caught_up()

    def _fail(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result(exc)
