"""A cold directory's posts from the compacted `posts_with_counts`, not `posts`' history.

`posts` is kept forever, deletions included: rebuilding the post directory from it
reads every post ever written, and start-up time grows with the whole history.
`posts_with_counts` holds one live record per post (compacted; a deleted post is a
tombstone). A directory loaded from it reads `posts` only from where the snapshot
stops reflecting it: the processor group's committed offsets on `posts` (C).

Why those offsets are safe: the processor's first stage commits the `posts-by-id`
records of every `posts` event before C in the same transaction as C. So they are
visible once C is, and once the group's committed offsets on `posts-by-id` reach that
topic's visible end (read after C), its second stage has committed their
`posts_with_counts` records too (again in one transaction with its offsets). The
snapshot may reflect more than C (the processor moves on meanwhile): applying a post
event twice, or a creation after its deletion, leaves the same directory
(DirectoryState.apply never revives a deletion and ignores a deletion of a post it does
not know, which only a snapshot that already tombstoned it can cause).

If the processor never committed, or its second stage does not get there in time, the
directory reads `posts` from the beginning, as before: a command never waits for the
processor.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from command_service.directory_store import Entry, Table
from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import committed_offsets, iter_topic, last_visible_offsets
from mysocial.log import get_logger
from mysocial.v1 import events_pb2 as ev

log = get_logger("command.directory")

Key = tuple[str, int]
FLUSH_EVERY = 10_000  # entries held in memory between store writes while loading


def posts_start(settings: Settings, wait_s: float) -> tuple[dict[Key, int], str]:
    """Where to read `posts` from after loading the snapshot, or ({}, why not)."""
    group = settings.topic(topics.PROCESSOR_GROUP)
    topic_posts, topic_by_id = settings.topic(topics.POSTS), settings.topic(topics.POSTS_BY_ID)
    deadline = time.monotonic() + wait_s
    try:
        through = committed_offsets(settings, group, topic_posts, wait_s)
        if not any(through.values()):
            return {}, "the processor has not committed any progress on posts"
        needed = {
            p: end for p, (end, _) in last_visible_offsets(settings, topic_by_id, wait_s).items()
        }
        while True:
            done = committed_offsets(
                settings, group, topic_by_id, max(1.0, deadline - time.monotonic())
            )
            behind = {p: end for p, end in needed.items() if done.get(p, 0) < end}
            if not behind:
                return {(topic_posts, p): offset for p, offset in through.items()}, ""
            if time.monotonic() > deadline:
                p = min(behind)
                return {}, (
                    f"the processor's second stage is behind (posts-by-id[{p}] committed "
                    f"{done.get(p, 0)} of {behind[p]}) after {wait_s:.0f} s"
                )
            time.sleep(0.2)  # polling the group's progress, bounded by the deadline
    except (KafkaException, TimeoutError) as exc:
        return {}, f"could not read the processor's progress: {exc}"


def load_posts(settings: Settings, posts: Table, flush: Callable[[], None], timeout: float) -> int:
    """Apply every record of posts_with_counts (to its end now); returns how many."""
    count = 0
    for rec in iter_topic(settings, settings.topic(topics.POSTS_WITH_COUNTS), timeout):
        if rec.key is None:
            continue
        post_id = rec.key.decode()
        if rec.value is None:
            known = posts.get(post_id)
            if known is not None and not known.deleted:
                posts.put(post_id, Entry(known.author, True))
        else:
            author = ev.PostWithCounts.FromString(rec.value).post.author_id
            if posts.get(post_id) is None:
                posts.put(post_id, Entry(sys.intern(author)))
        count += 1
        if count % FLUSH_EVERY == 0:
            flush()
    flush()
    return count
