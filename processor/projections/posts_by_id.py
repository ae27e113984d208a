"""posts, keyed by author, re-keyed by post id into `mysocial.posts-by-id`.

`posts` is keyed by author (a user's posts stay in order); counting needs a post on
the same partition p as its likes and comments. Each post event is re-produced with
key post_id to partition murmur2(post_id) of the co-partitioned count, inside the
transaction that commits the posts offset it was read at (exactly once). Headers say
where it came from: the source offset is what read-your-writes tokens name.
"""

from __future__ import annotations

import functools

from confluent_kafka import KafkaError, Message

from mysocial.events import InvalidEvent, check
from mysocial.kafka import topics
from mysocial.kafka.partitioning import partition_for
from processor.headers import SRC_INSTANCE, SRC_OFFSET, SRC_PARTITION
from processor.projection import Context, Projection


class PostsById(Projection):
    """Stateless: nothing to restore, a task per posts partition."""

    name = "posts_by_id"
    sources = (topics.POSTS,)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.topic_posts = settings.topic(topics.POSTS)
        self.topic_by_id = settings.topic(topics.POSTS_BY_ID)
        self.partitions = settings.copartitions
        self.instance = settings.processor_instance_id.encode()
        # Offset after the newest committed record re-keyed into each posts-by-id
        # partition (flow control waits until those this instance reads have been read
        # back). Deliveries count only for the transaction they were written in: a
        # report served after its transaction was aborted must not set a target that
        # read_committed readers never reach (likes would wait for it forever).
        self.repartitioned: dict[int, int] = {}
        self.delivered: dict[int, int] = {}  # of the open transaction
        self.generation = 0  # bumped at every commit and abort

    def apply(self, msgs: list[Message], start: int) -> int:
        run = self.ctx.run_of(msgs, start, self.topic_posts)
        for msg in run:
            self._rekey(msg)
        return start + len(run)

    def _rekey(self, msg: Message) -> None:
        partition, offset = msg.partition() or 0, msg.offset() or 0
        try:
            checked = check(topics.POSTS, msg.key(), msg.value(), partition, self.partitions)
        except InvalidEvent as exc:
            self.ctx.output.dead_letter(msg, str(exc))
            return
        key = checked.post_id.encode()
        self.ctx.output.produce(
            self.topic_by_id,
            key,
            msg.value(),
            partition_for(key, self.partitions),
            on_delivery=functools.partial(self._delivered, self.generation),
            headers=[
                (SRC_PARTITION, str(partition).encode()),
                (SRC_OFFSET, str(offset).encode()),
                (SRC_INSTANCE, self.instance),
            ],
            timestamp=msg.timestamp()[1],
        )

    def _delivered(self, generation: int, err: KafkaError | None, msg: Message) -> None:
        if err is None and generation == self.generation:
            p, offset = msg.partition() or 0, msg.offset() or 0
            self.delivered[p] = max(self.delivered.get(p, 0), offset + 1)

    def rekeyed_until(self, partition: int) -> int:
        """The offset after the newest post re-keyed into this posts-by-id partition,
        committed or in the open transaction (flow control's target)."""
        return max(self.repartitioned.get(partition, 0), self.delivered.get(partition, 0))

    def post_commit(self) -> None:
        for p, end in self.delivered.items():
            self.repartitioned[p] = max(self.repartitioned.get(p, 0), end)
        self.delivered.clear()
        self.generation += 1

    def abort(self) -> None:
        self.delivered.clear()  # what the aborted transaction re-keyed never shows up
        self.generation += 1
