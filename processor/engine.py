"""The processor's main loop: consume, hand records to projections, commit, exactly once.

One consumer (group `mysocial.processor`, read_committed, range assignor) and two
transactional producers per instance, taking a transaction each in turn
(processor/clients.py). The loop reads as the steps it takes; each step is a
collaborator in its own module:

- processor/tasks.py       tasks and their lifecycle (assign, restore, run, revoke);
- processor/restore.py     replaying changelogs into local state, a chunk per pass;
- processor/checkpoint.py  the transaction: begin, commit in five steps, abort+rewind;
- processor/flow.py        which partitions are paused (restoring; posts first);
- processor/membership.py  an instance left out of its group for too long stops;
- processor/projections/   what is computed: posts_by_id, posts_with_counts,
                           trending_posts (one module each, processor/projection.py).

Fenced or fatal errors end the process with one log line (exit code 1); its
partitions continue from the last commit wherever they are assigned next.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mysocial.config import Settings
from mysocial.kafka import consume_batch, topics
from mysocial.kafka.reader import watermarks
from mysocial.log import get_logger
from mysocial.metrics import SERVING
from processor import clients, metrics
from processor.checkpoint import Transaction
from processor.errors import FatalProcessorError, is_fatal
from processor.flow import FlowControl
from processor.membership import Membership, join_deadline_s
from processor.output import Output
from processor.projection import Context, Projection
from processor.projections.posts_by_id import PostsById
from processor.projections.posts_with_counts import PostsWithCounts
from processor.projections.trending_posts import TrendingPosts
from processor.restore import ChangelogReader
from processor.stats import StatsLog
from processor.tasks import TaskManager, owned_only
from processor.trending import TrendingConfig
from processor.watchdog import Watchdog

log = get_logger("processor")


class Processor:
    """One processor instance (run it as many times as you want to scale out)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.fatal: KafkaError | None = None  # a fatal error event of a client
        self.group = Membership(join_deadline_s(settings.processor_session_timeout_ms))
        self.metrics = metrics.register(self)
        self.consumer = clients.main_consumer(settings, self._on_client_error, self._on_stats)
        self.producers = clients.transactional_producers(
            settings, self._on_client_error, self.metrics.produced.update
        )
        producer = self.producers[0]
        self.reader = ChangelogReader(clients.restore_consumer(settings))
        self.marks = clients.watermark_consumer(settings)
        ctx = Context(
            settings,
            producer,
            Output(producer, settings.topic(topics.DEAD_LETTER)),
            clock,
            lambda topic, p: watermarks(self.marks, topic, p, 30),
        )
        self.ctx = ctx
        # The projections, in commit order (the counts feed trending's local stage).
        cfg = TrendingConfig.from_settings(settings)
        self.posts_by_id = PostsById(ctx)
        self.trending = TrendingPosts(ctx, cfg)
        self.counts = PostsWithCounts(ctx, cfg, listeners=[self.trending.local])
        self.projections: list[Projection] = [self.posts_by_id, self.counts, self.trending]
        self.by_topic = {settings.topic(s): p for p in self.projections for s in p.sources}
        self.tasks = TaskManager(self.projections, ctx, self.consumer, self.reader)
        self.watchdog = Watchdog.for_settings(settings)
        self.txn = Transaction(ctx, self.consumer, self.projections, self.watchdog, self.producers)
        self.flow = FlowControl(self.consumer, ctx, self.posts_by_id.rekeyed_until)
        self.stats = StatsLog([self._counters, *(p.stats for p in self.projections)])
        self.assignment_epoch = 0  # bumped by every rebalance callback
        self.closing = False
        self.running = True

    def stop(self, *_: Any) -> None:
        """Signal handler: only flips a flag; the loop finishes its transaction."""
        self.running = False

    def run(self) -> int:
        """Process until stop(); returns the process exit code."""
        self.watchdog.start()
        try:
            self.txn.init_producers()  # fences and ends what a zombie left open
            self.consumer.subscribe(
                list(self.by_topic),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.group.subscribed()
            log.info("processor_started", instance=self.settings.processor_instance_id)
            SERVING.set(1)
            live = self.settings.processor_commit_interval_ms / 1000.0
            catchup = max(live, self.settings.processor_catchup_commit_interval_ms / 1000.0)
            batch_size = self.settings.processor_batch_size
            drained = True
            while self.running:
                # Through a backlog (the last batch was full) transactions run longer: a
                # commit costs a round trip and markers; more events coalesce per post.
                interval = live if drained else catchup
                # 1. Tasks: initialize new ones, restore a chunk, start restored ones.
                self.tasks.initialize_and_restore()
                # 2. Poll: a batch, waiting at most until a commit or a timer is due.
                msgs = self._poll(batch_size, interval)
                # 3. Process: each record goes to the projection that consumes its topic.
                if msgs:
                    self.txn.begin()
                    self._process(msgs)
                    self.txn.clock.consumed(msgs)
                self.txn.poll()  # the producers' delivery, error and statistics callbacks
                # 4. Timers (trending recomputes: scores decay without events).
                self._punctuate()
                # 5. Commit when the interval is up, or at once when the input is
                # drained (a partial batch): idle traffic gets low latency, while under
                # load the time a commit takes lets the next batch grow.
                drained = len(msgs) < batch_size
                if self.txn.open and (drained or time.monotonic() >= self.txn.started + interval):
                    self.txn.commit()
                # 6. Pause and resume partitions (restoring tasks; posts first).
                self._flow_control()
                self.stats.maybe_log()
            self.txn.commit()
            return 0
        except (FatalProcessorError, KafkaException) as exc:  # fenced, fatal, or failed for good
            log.error(
                "processor_stopping_fatal",
                error=str(exc),
                hint="restart the instance; its partitions continue from the last commit",
            )
            return 1
        finally:
            self._close()

    # -- the steps ---------------------------------------------------------------------
    def _poll(self, batch_size: int, interval: float) -> list[Message]:
        self.watchdog.beat()
        if self.reader.active():
            timeout = 0.0  # restoring: the restore step is the loop's wait
        elif self.txn.open:
            timeout = max(0.0, self.txn.started + interval - time.monotonic())
        else:
            timeout = interval
        now = self.ctx.clock()
        timeout = min([timeout, *(p.next_timer(now) for p in self.projections)])
        epoch = self.assignment_epoch
        msgs = consume_batch(self.consumer, batch_size, timeout)
        if self.fatal is not None:  # e.g. fenced as a static member: no task comes back
            raise FatalProcessorError(str(self.fatal))
        self.group.check()
        if self.assignment_epoch != epoch:
            msgs = owned_only(self.consumer, msgs)
        return msgs

    def _process(self, msgs: list[Message]) -> None:
        by_topic = self.by_topic
        errors = 0
        i, n = 0, len(msgs)
        while i < n:
            msg = msgs[i]
            if msg.error() is not None:
                errors += 1
                self._consume_error(msg)
                i += 1
                continue
            projection = by_topic[msg.topic() or ""]
            after = projection.apply(msgs, i)
            assert after > i, f"{projection.name} made no progress at {msg.topic()}"
            i = after
        self.stats.consumed += n - errors

    def _punctuate(self) -> None:
        now = self.ctx.clock()
        for projection in self.projections:
            if projection.next_timer(now) <= 0:
                self.txn.begin()
                projection.punctuate(now)

    def _flow_control(self) -> None:
        self.flow.update(*self.tasks.partitions())

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error events (run inside poll); it retries the others itself."""
        self.fatal = err if is_fatal(err) else self.fatal

    def _consume_error(self, msg: Message) -> None:
        err = msg.error()
        assert err is not None
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if is_fatal(err):
            raise FatalProcessorError(str(err))
        log.warning("consume_error", error=str(err))

    # -- rebalancing (callbacks run inside poll; nothing here blocks for long) ----------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_epoch += 1
        self.group.assigned()
        self.tasks.assign(partitions)
        consumer.assign(partitions)
        self.flow.reset()
        self._flow_control()  # every input of a task not running yet stays paused
        log.info("assignment_received", partitions=len(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_epoch += 1
        self.group.unassigned()
        if not self.closing:  # closing after a fatal error: no transactional work
            self.txn.commit()
        self.tasks.revoke(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_epoch += 1
        self.group.unassigned()
        log.warning("partitions_lost", count=len(partitions))
        if self.txn.open and not self.closing:
            self.txn.abort_and_rewind("partitions lost")
        self.tasks.revoke(partitions, lost=True)

    def _counters(self) -> dict[str, int]:
        return {
            "commits": self.txn.commits,
            "aborts": self.txn.aborts,
            "dead_letters": self.ctx.output.dead_letters,
        }

    def _on_stats(self, stats_json: str) -> None:
        self.group.on_stats(stats_json)
        self.metrics.consumed.update(stats_json)

    def _close(self) -> None:
        SERVING.set(0)
        self.closing = True
        self.tasks.close_all()
        for consumer in (self.consumer, self.reader.consumer, self.marks):
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()
        self.txn.close()
        self.counts.shutdown()
        log.info("processor_stopped")
