"""Flow control: which input partitions are paused, and why.

Two reasons to pause a partition:
- its task is not running yet (restoring): nothing may be applied before its state;
- posts first, when catching up: likes and comments are held back while many post
  events are still on their way to this instance (posts not yet re-keyed, or
  re-keyed records not yet read back). Otherwise a backlog would park every like in
  the pending queue of a post that arrives a moment later, tripling the work of
  catching up. Live traffic, with a few posts in flight at any moment, is never
  paused: a pause costs likes a fetch round trip, and the pending queue handles a
  like that overtakes its post.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mysocial.kafka import topics
from mysocial.log import get_logger
from processor.projection import Context

log = get_logger("processor.flow")

# Post events in flight (not yet read back by id) above which likes and comments wait:
# a backlog being caught up, not live traffic.
PAUSE_ENGAGEMENTS_BEHIND = 500
# While likes and comments are held, a posts partition whose end no fetch has told the
# consumer yet is asked of the broker once it has been unknown this long, and again at
# most this often. Why: librdkafka learns a partition's end only from fetch responses,
# and a smoke run of the benchmark saw a posts partition report none for six minutes,
# which held every like and comment back all that time (an unknown backlog holds
# them, below). Once they flow, an unknown end counts as no backlog, as before: the
# question blocks the loop for a round trip, and live traffic must not pay for it.
QUERY_END_AFTER_S = 1.0

Partition = tuple[str, int]


class FlowControl:
    """Decides the paused set each loop pass and applies only the difference."""

    def __init__(
        self, consumer: Consumer, ctx: Context, rekeyed_until: Callable[[int], int]
    ) -> None:
        self.consumer = consumer
        self.ctx = ctx
        t = ctx.settings.topic
        self.topic_posts = t(topics.POSTS)
        self.topic_by_id = t(topics.POSTS_BY_ID)
        self.engagement = frozenset((t(topics.LIKES), t(topics.COMMENTS)))
        # posts-by-id partition -> offset after the newest post re-keyed into it.
        self.rekeyed_until = rekeyed_until
        self.engagement_held = True
        self.paused: set[Partition] = set()
        self.logged = 0.0
        # posts partition -> (when its end was first unknown or last asked, the answer)
        self.asked: dict[Partition, tuple[float, int]] = {}

    def reset(self) -> None:
        """A new assignment starts with nothing paused (librdkafka forgets pauses on
        assign) and engagement held until the posts partitions are known."""
        self.paused = set()
        self.engagement_held = True
        self.logged = time.monotonic()
        self.asked = {}

    def update(self, assigned: set[Partition], not_running: set[Partition]) -> None:
        held = self._hold_engagement(assigned)
        if held != self.engagement_held:
            log.info("engagement_held" if held else "engagement_released")
        self.engagement_held = held
        want = set(not_running)
        if self.engagement_held:
            want.update(tp for tp in assigned if tp[0] in self.engagement)
        pause, resume = want - self.paused, self.paused - want
        if pause:
            self.consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in resume])
        self.paused = want

    def _hold_engagement(self, assigned: set[Partition]) -> bool:
        behind = 0
        unknown = False  # a posts partition not fetched yet: its backlog is unknown
        where = ""
        consumed = self.ctx.consumed
        for topic, p in assigned:
            if topic == self.topic_posts:
                position = consumed.get((topic, p))
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high < 0 and self.engagement_held:  # released: an unknown end is 0
                    high = self._asked_end((topic, p))
                if position is None or high < 0:
                    unknown = True
                    where = where or f"posts[{p}] not fetched yet"
                elif position < high:
                    behind += high - position
                    where = where or f"posts[{p}] at {position} of {high}"
            elif topic == self.topic_by_id:
                target = self.rekeyed_until(p)
                position = consumed.get((topic, p), 0)
                if position < target:
                    behind += target - position
                    where = where or f"posts-by-id[{p}] at {position} of {target}"
        # Hysteresis: pause on a backlog, resume once every post has been read back.
        if self.engagement_held:
            held = behind > 0 or unknown
            if held and time.monotonic() - self.logged > 10:
                self.logged = time.monotonic()
                log.info("engagement_still_paused", posts_behind=behind, reason=where)
            return held
        return behind >= PAUSE_ENGAGEMENTS_BEHIND

    def _asked_end(self, tp: Partition) -> int:
        """The end of a partition no fetch has reported, asked of the broker once it has
        been unknown QUERY_END_AFTER_S and then at most that often; -1 until known."""
        now = time.monotonic()
        since, answer = self.asked.setdefault(tp, (now, -1))
        if now - since < QUERY_END_AFTER_S:
            return answer
        try:
            _, end = self.consumer.get_watermark_offsets(
                TopicPartition(*tp), timeout=QUERY_END_AFTER_S, cached=False
            )
        except KafkaException as exc:  # the broker did not answer: still unknown
            log.info("posts_end_not_known", partition=tp[1], error=str(exc))
            end = -1
        if end >= 0 > answer:  # once per partition: the fetches never told it
            log.info("posts_end_asked", partition=tp[1], end=end)
        self.asked[tp] = (now, end)
        return end
