"""The processor's consume-transform-produce loop, exactly once.

One consumer (group `mysocial.processor`, read_committed, range assignor so that
partition p of likes, comments and the repartition topic go to the same instance)
and one transactional producer. Every commit interval, in one Kafka transaction:

- posts records re-keyed by post id into `mysocial.posts-by-id`,
- the changed state keys into `mysocial.processor-changelog` (partition p),
- one `posts_with_counts` record per changed post (partition p),
- trending candidates and rankings (processor/ranking.py),
- dead letters, and the consumed offsets (send_offsets_to_transaction).

The per-event work (decode, check, apply the rules of processor/rules.py) runs in a
Core (processor/core.py): compiled by default, the Python rules on request.

State reaches the local RocksDB only after the commit succeeded. On an abortable
error the transaction is aborted, uncommitted state dropped and the consumer
rewound to the committed offsets. Fenced or fatal errors end the process.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from mysocial.config import Settings
from mysocial.events import InvalidEvent, check
from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import client_logger, consume_batch, topics
from mysocial.kafka.partitioning import partition_for
from mysocial.kafka.reader import watermarks
from mysocial.log import get_logger
from mysocial.process import tune_gc
from processor.core import (
    DONE,
    ROUTE_OF_CONTRACT,
    SRC_OFFSET,
    STOP_CANDIDATES,
    STOP_ERROR,
    STOP_POSTS,
    CoreUnavailable,
    apply_checked,
    make_core,
)
from processor.local_store import LocalStore, TaskStore
from processor.ranking import Ranking
from processor.trending import TrendingConfig

log = get_logger("processor")

GROUP = "mysocial.processor"
SRC_PARTITION = "src-partition"
SRC_INSTANCE = "src-instance"
LOCAL_STATE_MAX_AGE_S = 12 * 3600  # well inside the changelog's delete.retention.ms
# Post events in flight (not yet read back by id) above which likes and comments wait:
# a backlog being caught up, not live traffic.
PAUSE_ENGAGEMENTS_BEHIND = 500


class FatalProcessorError(RuntimeError):
    """The instance must stop (fenced by a newer instance, or a fatal Kafka error)."""


def trending_config(settings: Settings) -> TrendingConfig:
    return TrendingConfig(
        half_life_s=settings.trending_half_life_s,
        like_weight=settings.trending_like_weight,
        comment_weight=settings.trending_comment_weight,
        min_distinct_users=settings.trending_min_users,
        horizon_s=settings.trending_horizon_s,
        top_k=settings.trending_top_k,
        recompute_interval_s=settings.trending_interval_ms / 1000.0,
    )


@dataclass
class Task:
    """A partition this instance owns (its state lives in the Core)."""

    partition: int
    store: TaskStore


@dataclass
class Counters:
    consumed: int = 0
    outputs: int = 0
    dead_letters: int = 0
    commits: int = 0
    aborts: int = 0
    last_log: float = field(default_factory=time.monotonic)
    last_consumed: int = 0


class Processor:
    """One processor instance (run it as many times as you want to scale out)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        t = settings.topic
        self.topic_posts = t(topics.POSTS)
        self.topic_by_id = t(topics.POSTS_BY_ID)
        self.topic_likes = t(topics.LIKES)
        self.topic_comments = t(topics.COMMENTS)
        self.topic_changelog = t(topics.PROCESSOR_CHANGELOG)
        self.topic_output = t(topics.POSTS_WITH_COUNTS)
        self.topic_dead = t(topics.DEAD_LETTER)
        self.contract = {
            self.topic_posts: topics.POSTS,
            self.topic_by_id: topics.POSTS_BY_ID,
            self.topic_likes: topics.LIKES,
            self.topic_comments: topics.COMMENTS,
        }
        self.partitions = settings.copartitions
        self.trending = trending_config(settings)
        self.ranking = Ranking(settings, self.trending)
        self.contract[self.ranking.topic_candidates] = topics.TRENDING_CANDIDATES
        self.core = make_core(
            settings.processor_core,
            {topic: ROUTE_OF_CONTRACT[name] for topic, name in self.contract.items()},
            self.partitions,
            self.trending,
        )
        state_path = (
            Path(settings.processor_state_dir)
            / f"{settings.topic_namespace}{settings.processor_instance_id}"
        )
        self.store = LocalStore(state_path, cache_mb=settings.processor_cache_mb)
        self.tasks: dict[int, Task] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.changelog_next: dict[int, int] = {}
        # Flow control (see _flow_control): consumed offsets that survive commits, and
        # the offset after the newest record we re-keyed into each owned partition.
        self.consumed: dict[tuple[str, int], int] = {}
        self.repartitioned: dict[int, int] = {}
        self.engagement_paused = False
        self.paused_logged = 0.0
        # Bumped by every rebalance callback; see _after_rebalance.
        self.assignment_epoch = 0
        self.in_txn = False
        self.txn_started = 0.0
        self.running = True
        self.counters = Counters()
        bootstrap = settings.bootstrap
        group = t(GROUP)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                # Static membership: a restarted instance (same id) takes its partitions
                # back without a rebalance; zombies are fenced by instance id.
                "group.instance.id": f"{group}.{settings.processor_instance_id}",
                "session.timeout.ms": settings.processor_session_timeout_ms,
                "heartbeat.interval.ms": max(500, settings.processor_session_timeout_ms // 5),
                "max.poll.interval.ms": 600000,
                "fetch.wait.max.ms": 50,
                # The prefetch queue is a fixed buffer (librdkafka's default 64 MiB,
                # stated here because M1 counts it as fixed): bounding it lower cost
                # 15-20 % of catch-up throughput in T2.
                "queued.max.messages.kbytes": 65_536,
                "logger": client_logger(),
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": f"{t(GROUP)}.{settings.processor_instance_id}",
                "transaction.timeout.ms": settings.processor_transaction_timeout_ms,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 2_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                # As Kafka Streams' default: on two cores the CPU compression takes from
                # the broker and the processor costs more than the bytes it saves.
                "compression.type": "none",
                "partitioner": "murmur2_random",
                "logger": client_logger(),
            }
        )
        self.restore_consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{group}.restore",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "logger": client_logger(),
            }
        )

    # -- lifecycle -----------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Signal handler: only flips a flag; the loop finishes its transaction."""
        self.running = False

    def run(self) -> int:
        """Process until stop(); returns the process exit code."""
        try:
            self.producer.init_transactions(30)
            self.consumer.subscribe(
                [
                    self.topic_posts,
                    self.topic_by_id,
                    self.topic_likes,
                    self.topic_comments,
                    self.ranking.topic_candidates,
                ],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            log.info(
                "processor_started",
                instance=self.settings.processor_instance_id,
                group=self.settings.topic(GROUP),
            )
            live_interval = self.settings.processor_commit_interval_ms / 1000.0
            catchup_interval = self.settings.processor_catchup_commit_interval_ms / 1000.0
            batch_size = self.settings.processor_batch_size
            drained = True
            while self.running:
                # Working through a backlog (the last batch was full), transactions run
                # longer: each commit costs a broker round trip and markers on every
                # partition written, and more events coalesce per post (measured on T2:
                # 500 ms instead of 100 ms cut the broker's CPU per event by a third).
                interval = live_interval if drained else max(live_interval, catchup_interval)
                timeout = (
                    interval
                    if not self.in_txn
                    else max(0.0, self.txn_started + interval - time.monotonic())
                )
                timeout = min(timeout, self.ranking.seconds_to_tick(self.clock()))
                epoch = self.assignment_epoch
                msgs = consume_batch(self.consumer, batch_size, timeout)
                if self.assignment_epoch != epoch:
                    msgs = self._after_rebalance(msgs)
                if msgs:
                    self._process(msgs)
                self.producer.poll(0)
                if self.ranking.due(self.clock()):
                    self._begin()
                    self.ranking.tick(self.producer, self.clock(), self.tasks)
                # Commit when the interval is up, or at once when the input is drained
                # (a partial batch): idle traffic gets low latency, while under load the
                # time a commit takes lets the next batch grow (self-tuning batching).
                drained = len(msgs) < batch_size
                if self.in_txn and (drained or time.monotonic() >= self.txn_started + interval):
                    self._commit()
                self._flow_control()
                self._log_stats()
            if self.in_txn:
                self._commit()
            return 0
        except FatalProcessorError as exc:
            log.error(
                "processor_stopping_fatal",
                error=str(exc),
                hint="restart the instance; its partitions continue from the last commit",
            )
            return 1
        finally:
            self._close()

    def _close(self) -> None:
        for consumer in (self.consumer, self.restore_consumer):
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()
        self.producer.flush(5)
        self.store.close()
        log.info("processor_stopped")

    # -- processing ---------------------------------------------------------------
    def _begin(self) -> None:
        if not self.in_txn:
            self._call(self.producer.begin_transaction)
            self.in_txn = True
            self.txn_started = time.monotonic()

    def _process(self, msgs: list[Message]) -> None:
        """Hand the batch to the core; handle here what it stops at (in order)."""
        self._begin()
        core, positions, consumed = self.core, self.positions, self.consumed
        errors = 0
        i = 0
        while True:
            i, why = core.process(msgs, i, positions, consumed)
            if why == DONE:
                break
            msg = msgs[i]
            i += 1
            if why == STOP_ERROR:
                errors += 1
                self._consume_error(msg)
                continue
            topic = msg.topic()
            partition = msg.partition()
            offset = msg.offset()
            assert topic is not None and partition is not None and offset is not None
            positions[(topic, partition)] = offset + 1
            consumed[(topic, partition)] = offset + 1
            if why == STOP_POSTS:
                self._repartition(msg, partition, offset)
            elif why == STOP_CANDIDATES:
                self.ranking.on_candidates(msg)
            else:
                source = self.contract[topic]
                owned = partition in self.tasks
                reason = apply_checked(core, msg, source, self.partitions, owned)
                if reason is not None:
                    self._dead_letter(msg, reason)
        self.counters.consumed += len(msgs) - errors
        for event, fields in core.take_warnings():
            log.warning(event, **fields)

    def _consume_error(self, msg: Message) -> None:
        err = msg.error()
        assert err is not None
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise FatalProcessorError(str(err))
        log.warning("consume_error", error=str(err))

    def _repartition(self, msg: Message, partition: int, offset: int) -> None:
        try:
            checked = check(topics.POSTS, msg.key(), msg.value(), partition, self.partitions)
        except InvalidEvent as exc:
            self._dead_letter(msg, str(exc))
            return
        key = checked.post_id.encode()
        target = partition_for(key, self.partitions)
        self._produce(
            self.topic_by_id,
            key,
            msg.value(),
            target,
            on_delivery=self._on_repartitioned,
            headers=[
                (SRC_PARTITION, str(partition).encode()),
                (SRC_OFFSET, str(offset).encode()),
                (SRC_INSTANCE, self.settings.processor_instance_id.encode()),
            ],
            timestamp=msg.timestamp()[1],
        )

    def _on_repartitioned(self, err: KafkaError | None, msg: Message) -> None:
        if err is None and msg.partition() in self.tasks:
            p, offset = msg.partition() or 0, msg.offset() or 0
            self.repartitioned[p] = max(self.repartitioned.get(p, 0), offset + 1)

    def _after_rebalance(self, msgs: list[Message]) -> list[Message]:
        """A rebalance ran inside the consume calls that returned msgs.

        The batch may then hold records of partitions revoked in between
        (confluent-kafka-python#1013). Those are dropped here, before they could move
        this instance's positions: otherwise its next commit would write offsets for
        partitions another instance owns now. Records of partitions revoked and given
        back may be read again from the committed offset; that leaves the same state as
        reading them once (test_records_read_again_after_a_rebalance_change_nothing).
        """
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        kept = [m for m in msgs if (m.topic(), m.partition()) in owned]
        if len(kept) != len(msgs):
            log.info("records_of_revoked_partitions_dropped", records=len(msgs) - len(kept))
        return kept

    def _flow_control(self) -> None:
        """Posts first, when catching up: hold likes and comments back while many post
        events are still on their way to this instance (posts not yet re-keyed, or
        re-keyed records not yet read back). Otherwise a backlog would park every like
        in the pending queue of a post that arrives a moment later, tripling the work
        of catching up. Live traffic, with a few posts in flight at any moment, is
        never paused: a pause costs likes a fetch round trip, and the pending queue
        handles a like that overtakes its post."""
        behind = 0
        unknown = False  # a posts partition not fetched yet: its backlog is unknown
        where = ""
        for (topic, p), consumed in self.consumed.items():
            if topic == self.topic_posts:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high < 0:
                    unknown = True
                    where = where or f"posts[{p}] not fetched yet"
                elif consumed < high:
                    behind += high - consumed
                    where = where or f"posts[{p}] at {consumed} of {high}"
        for p, target in self.repartitioned.items():
            consumed = self.consumed.get((self.topic_by_id, p), 0)
            if consumed < target:
                behind += target - consumed
                where = where or f"posts-by-id[{p}] at {consumed} of {target}"
        # Hysteresis: pause on a backlog, resume once every post has been read back.
        if self.engagement_paused:
            paused = behind > 0 or unknown
        else:
            paused = behind >= PAUSE_ENGAGEMENTS_BEHIND
        if paused != self.engagement_paused:
            held = [
                TopicPartition(t, p)
                for t in (self.topic_likes, self.topic_comments)
                for p in self.tasks
            ]
            if held:
                (self.consumer.pause if paused else self.consumer.resume)(held)
            self.engagement_paused = paused
        elif paused and time.monotonic() - self.paused_logged > 10:
            self.paused_logged = time.monotonic()
            log.info("engagement_still_paused", posts_behind=behind, reason=where)

    def _dead_letter(self, msg: Message, reason: str) -> None:
        self.counters.dead_letters += 1
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            reason=reason,
        )
        self._produce(
            self.topic_dead,
            msg.key(),
            msg.value(),
            0,
            headers=[
                ("source-topic", (msg.topic() or "").encode()),
                ("source-partition", str(msg.partition()).encode()),
                ("source-offset", str(msg.offset()).encode()),
                ("reason", reason.encode()),
            ],
        )

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        while True:
            try:
                kwargs: dict[str, Any] = {"partition": partition}
                if headers:
                    kwargs["headers"] = headers
                if timestamp > 0:
                    kwargs["timestamp"] = timestamp
                if on_delivery is not None:
                    kwargs["on_delivery"] = on_delivery
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    # -- commit -------------------------------------------------------------------
    def _commit(self) -> None:
        """Write outputs and changelog, commit offsets and the transaction atomically."""
        if not self.in_txn:
            return
        self.changelog_next.clear()
        for task in self.tasks.values():
            self._flush_task(task)
        self.ranking.before_commit(self.producer, self.clock(), self.tasks)
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.positions.items()]
        try:
            self.producer.flush()
            if offsets:
                self._call(
                    self.producer.send_offsets_to_transaction,
                    offsets,
                    self.consumer.consumer_group_metadata(),
                    30,
                )
            self._call(self.producer.commit_transaction, 60)
        except _Abortable as exc:
            self._abort_and_rewind(str(exc))
            return
        self.in_txn = False
        self.positions.clear()
        self.counters.commits += 1
        for task in self.tasks.values():
            task.store.commit(self.core, self.changelog_next.get(task.partition))
            self.core.trim_cache(task.partition, 50_000)
        self.ranking.after_commit()

    def _flush_task(self, task: Task) -> None:
        p = task.partition
        changed = self.core.drain(p)
        # One record per changed key, the bulk of what the processor writes; the last
        # one reports its offset (the store's checkpoint).
        self.core.produce_changelog(
            p, self.producer, self.topic_changelog, self._on_changelog_delivery
        )
        records = []
        for post_id, value, raw in changed:
            self._produce(self.topic_output, post_id.encode(), value, p)
            rec = st.PostRecord()
            rec.ParseFromString(raw)
            records.append(rec)
        self.counters.outputs += len(changed)
        self.ranking.on_task_changes(task, records, self.clock())

    def _on_changelog_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            self.changelog_next[partition] = offset + 1

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a transactional API, retrying retriable errors; classify the rest."""
        for attempt in range(10):
            try:
                return fn(*args)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
                    raise FatalProcessorError(f"{fn.__name__}: {err}") from exc
                if err.txn_requires_abort():
                    raise _Abortable(f"{fn.__name__}: {err}") from exc
                if err.retriable() and attempt < 9:
                    log.warning("transaction_call_retry", call=fn.__name__, error=str(err))
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise FatalProcessorError(f"{fn.__name__}: {err}") from exc
        raise AssertionError("unreachable")

    def _abort_and_rewind(self, reason: str) -> None:
        """Abort the open transaction and continue from the last committed state."""
        log.warning("transaction_aborted", reason=reason)
        self.counters.aborts += 1
        try:
            self._call(self.producer.abort_transaction, 30)
        except _Abortable as exc:
            raise FatalProcessorError(f"abort failed: {exc}") from exc
        self.in_txn = False
        self.positions.clear()
        self.repartitioned.clear()  # what the aborted transaction re-keyed never shows up
        for task in self.tasks.values():
            self.core.discard(task.partition)
        self.ranking.discard()
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=30):
                offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                self.consumed[(tp.topic, tp.partition)] = max(tp.offset, 0)

    # -- rebalancing --------------------------------------------------------------
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_epoch += 1
        if self.in_txn:
            self._commit()
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_epoch += 1
        log.warning("partitions_lost", count=len(partitions))
        if self.in_txn:
            self._abort_and_rewind("partitions lost")
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.topic_likes and tp.partition in self.tasks:
                del self.tasks[tp.partition]
                self.core.remove_task(tp.partition)
            if tp.topic == self.ranking.topic_candidates:
                self.ranking.unassign()
            self.positions.pop((tp.topic, tp.partition), None)
            self.consumed.pop((tp.topic, tp.partition), None)
            if tp.topic == self.topic_by_id:
                self.repartitioned.pop(tp.partition, None)
        self.engagement_paused = False  # a new assignment starts unpaused

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Committed offsets are fetched with require_stable: this waits until any
        # transaction of a previous owner that carries offsets is resolved, so the
        # changelog read next matches the offsets we resume from.
        self.assignment_epoch += 1
        started = time.monotonic()
        committed = consumer.committed(partitions, timeout=60) if partitions else []
        for tp in committed:
            self.consumed[(tp.topic, tp.partition)] = max(tp.offset, 0)
        self.engagement_paused = False
        new = sorted(
            tp.partition
            for tp in partitions
            if tp.topic == self.topic_likes and tp.partition not in self.tasks
        )
        fetched = time.monotonic()
        restored = self._restore(new)
        for p in new:
            store = self.store.task(p)
            self.core.add_task(p, store)
            self.tasks[p] = Task(p, store)
        changelog_done = time.monotonic()
        self.ranking.on_assign(committed, self.tasks, self.restore_consumer, self.clock())
        # Assign now (restore is done), with likes and comments paused until the posts
        # partitions have been fetched once: only then is it known whether they hold a
        # backlog (posts first) or not (flow control resumes them on its next pass).
        consumer.assign(partitions)
        held = [tp for tp in partitions if tp.topic in (self.topic_likes, self.topic_comments)]
        if held:
            consumer.pause(held)
            self.engagement_paused = True
        done = time.monotonic()
        log.info(
            "partitions_assigned",
            tasks=sorted(self.tasks),
            new=new,
            restored_records=restored,
            restore_s=round(done - started, 3),
            offsets_fetch_s=round(fetched - started, 3),
            changelog_restore_s=round(changelog_done - fetched, 3),
            trending_restore_s=round(done - changelog_done, 3),
        )

    def _restore(self, partitions: list[int]) -> int:
        """Bring the local store of each task up to the end of its changelog."""
        if not partitions:
            return 0
        assign = []
        stores = {p: self.store.task(p) for p in partitions}
        for p in partitions:
            store = stores[p]
            low, high = watermarks(self.restore_consumer, self.topic_changelog, p, 30)
            ckpt = store.checkpoint()
            start = OFFSET_BEGINNING
            if (
                ckpt is not None
                and ckpt[0] >= low
                and time.time() - ckpt[1] < LOCAL_STATE_MAX_AGE_S
            ):
                start = ckpt[0]
            else:
                store.wipe()
            if start != OFFSET_BEGINNING and start >= high:
                continue
            if start == OFFSET_BEGINNING and high <= low:
                continue
            assign.append(TopicPartition(self.topic_changelog, p, start))
        if not assign:
            return 0
        self.restore_consumer.assign(assign)
        remaining = {tp.partition for tp in assign}
        total = 0
        try:
            while remaining:
                msgs = self.restore_consumer.consume(10000, 1.0)
                batches: dict[int, list[tuple[bytes, bytes | None]]] = {}
                last: dict[int, int] = {}
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(msg.partition() or 0)
                            continue
                        raise FatalProcessorError(f"restore: {err}")
                    part = msg.partition() or 0
                    batches.setdefault(part, []).append((msg.key() or b"", msg.value()))
                    last[part] = msg.offset() or 0
                for part, records in batches.items():
                    stores[part].restore(records, last[part] + 1)
                    total += len(records)
        finally:
            self.restore_consumer.unassign()
        return total

    # -- observability ------------------------------------------------------------
    def _log_stats(self) -> None:
        now = time.monotonic()
        elapsed = now - self.counters.last_log
        if elapsed < 10:
            return
        c = self.counters
        rate = (c.consumed - c.last_consumed) / elapsed
        stats = [self.core.stats(p) for p in self.tasks]
        log.info(
            "processor_stats",
            consumed=c.consumed,
            per_s=round(rate),
            outputs=c.outputs,
            dead_letters=c.dead_letters,
            commits=c.commits,
            aborts=c.aborts,
            tasks=len(self.tasks),
            unauthorized=sum(s[4] for s in stats),
            store_reads=sum(s[5] for s in stats),
        )
        c.last_log = now
        c.last_consumed = c.consumed


class _Abortable(Exception):
    """The transaction must be aborted (and the input rewound)."""


def main(settings: Settings) -> int:
    try:
        processor = Processor(settings)
    except CoreUnavailable as exc:
        log.error("processor_core_unavailable", error=str(exc))
        return 2
    tune_gc()
    signal.signal(signal.SIGTERM, processor.stop)
    signal.signal(signal.SIGINT, processor.stop)
    return processor.run()


if __name__ == "__main__":
    sys.exit(main(Settings.from_env()))
