"""Unit tests of the processor's pure state transitions (dict store, no Kafka)."""

from __future__ import annotations

import uuid

import pytest

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor import rules as rules_mod
from processor.rules import DictStore, TaskState
from tests.support.rules import CFG, T0, Harness

P = str(uuid.uuid4())
C1, C2 = str(uuid.uuid4()), str(uuid.uuid4())


def test_likes_count_distinct_users_latest_action() -> None:
    h = Harness()
    h.create(P, "author")
    h.like(P, "u1")
    h.like(P, "u1")  # twice counts once
    h.like(P, "u2", unlike=True)  # unlike without like changes nothing
    h.like(P, "author")  # an author may like their own post
    assert h.counts(P) == (2, 0)
    h.like(P, "u1", unlike=True)
    h.like(P, "u1", unlike=True)
    assert h.counts(P) == (1, 0)
    h.like(P, "u1")
    assert h.counts(P) == (2, 0)


def test_comments_added_and_deleted_once() -> None:
    h = Harness()
    h.create(P, "author")
    h.comment(P, "u1", C1)
    h.comment(P, "u1", C1)  # retried add: same id, counted once
    h.comment(P, "u2", C2)
    assert h.counts(P) == (0, 2)
    h.uncomment(P, "u1", C1)
    h.uncomment(P, "u1", C1)  # deleting twice changes nothing
    h.uncomment(P, "u1", str(uuid.uuid4()))  # unknown comment changes nothing
    assert h.counts(P) == (0, 1)
    h.comment(P, "u1", C1)  # a deleted comment cannot be revived by a retry
    assert h.counts(P) == (0, 1)


def test_comment_delete_authorization() -> None:
    h = Harness()
    h.create(P, "author")
    h.comment(P, "u1", C1)
    h.comment(P, "u2", C2)
    h.uncomment(P, "intruder", C1)  # neither comment author nor post author: ignored
    assert h.counts(P) == (0, 2)
    assert h.state.stats.unauthorized == 1
    h.uncomment(P, "author", C1)  # the post's author may delete any comment
    h.uncomment(P, "u2", C2)  # the comment's author may delete it
    assert h.counts(P) == (0, 0)


def test_every_comment_event_yields_its_comment_as_it_is_now() -> None:
    """What post_comments gets per commit: one record per touched comment, in event
    order, with the newest event's offset; a deleted or unknown comment is None."""
    h = Harness()
    h.create(P, "author")
    h.comment(P, "u1", C1)  # offset 0
    h.comment(P, "u2", C2)  # 1
    h.comment(P, "u1", C1)  # 2: retried add, the same comment again
    changes = h.state.drain_comments()
    assert [(o, c) for o, _, c, _ in changes] == [(1, C2), (2, C1)]
    value = res.Comment.FromString(changes[1][3] or b"")
    assert (value.comment_id, value.post_id, value.author_id, value.text) == (C1, P, "u1", "hi")
    assert value.HasField("created_at")
    h.drain()
    h.uncomment(P, "intruder", C1)  # 3: ignored, but says what C1 is
    h.uncomment(P, "u2", C2)  # 4
    unknown = str(uuid.uuid4())
    h.uncomment(P, "u1", unknown)  # 5
    changes = h.state.drain_comments()
    assert [(o, c, r is None) for o, _, c, r in changes] == [
        (3, C1, False),
        (4, C2, True),
        (5, unknown, True),
    ]
    h.delete(P, "author")
    h.comment(P, "u1", str(uuid.uuid4()))  # on a deleted post: nothing
    assert h.state.drain_comments() == []
    deleted = h.state.store.get(b"C" + P.encode() + C2.encode())
    assert deleted is not None and st.CommentRecord.FromString(deleted).text == ""


def test_post_delete_authorization_and_tombstone() -> None:
    h = Harness()
    h.create(P, "author")
    h.like(P, "u1")
    h.drain()
    h.delete(P, "intruder")
    assert h.state.post(P).status == rules_mod.LIVE  # type: ignore[union-attr]
    assert h.state.stats.unauthorized == 1
    h.delete(P, "author")
    _, outputs = h.drain()
    assert [o.status for o in outputs] == [rules_mod.DELETED]  # published as a tombstone
    h.like(P, "u2")  # late events on a deleted post are ignored
    h.comment(P, "u2", C1)
    _, outputs = h.drain()
    assert outputs == []
    h.create(P, "author")  # a retried create cannot revive it
    assert h.state.post(P).status == rules_mod.DELETED  # type: ignore[union-attr]


def test_events_before_their_post_wait_and_then_count() -> None:
    h = Harness()
    h.like(P, "u1")
    h.like(P, "u2")
    h.like(P, "u2", unlike=True)
    h.comment(P, "u3", C1)
    h.uncomment(P, "author", C1)  # needs the post's author: decided on arrival
    _, outputs = h.drain()
    assert outputs == []  # nothing published while the post is unknown
    assert h.state.post(P).status == rules_mod.PENDING  # type: ignore[union-attr]
    h.create(P, "author")
    assert h.counts(P) == (1, 0)
    changelog, outputs = h.drain()
    assert [o.post.post_id for o in outputs] == [P]
    queue_keys = [k for k in changelog if k.startswith(b"Q")]
    assert queue_keys and all(changelog[k] is None for k in queue_keys)  # queue emptied


def test_pending_queue_is_bounded() -> None:
    h = Harness()
    h.state.max_pending = 3
    for i in range(3):
        h.like(P, f"u{i}")
    with pytest.raises(rules_mod.PendingOverflow):
        h.like(P, "u9")


def test_outputs_are_coalesced_per_commit() -> None:
    h = Harness()
    h.create(P, "author")
    h.drain()
    for i in range(500):
        h.like(P, f"user{i}")
    changelog, outputs = h.drain()
    assert len(outputs) == 1 and outputs[0].post.like_count == 500
    assert sum(1 for k in changelog if k.startswith(b"P")) == 1
    rec = h.state.post(P)
    assert rec is not None and rec.likes_applied_through == h.offsets[topics.LIKES]


def test_read_your_writes_offsets_move_even_on_duplicates() -> None:
    h = Harness()
    h.create(P, "author")
    h.like(P, "u1")
    h.drain()
    h.like(P, "u1")  # duplicate: counts unchanged but the offset was applied
    _, outputs = h.drain()
    assert len(outputs) == 1 and outputs[0].likes_applied_through == h.offsets[topics.LIKES]


def test_state_survives_a_fresh_cache() -> None:
    h = Harness()
    h.create(P, "author")
    h.like(P, "u1")
    h.comment(P, "u2", C1)
    h.drain()
    h.state.forget_cache()
    assert h.counts(P) == (1, 1)
    h.like(P, "u1")
    assert h.counts(P) == (1, 1)


def test_like_fast_path_matches_the_general_path() -> None:
    general, fast = Harness(), Harness()
    for h in (general, fast):
        h.create(P, "author")
    actions = [("u1", False), ("u2", False), ("u1", False), ("u1", True), ("author", False)]
    for i, (user, unlike) in enumerate(actions):
        general.like(P, user, T0 + i, unlike=unlike)
        event = ev.Event(event_id=f"e{i}", actor_user_id=user)
        (event.post_unliked if unlike else event.post_liked).post_id = P
        fast.state.apply_like(P, user, not unlike, i, event, T0 + i)
    g, f = general.state.post(P), fast.state.post(P)
    assert g is not None and f is not None
    assert (g.post.like_count, g.trending) == (f.post.like_count, f.trending)
    assert g.likes_applied_through == f.likes_applied_through


def _apply_as_engine(state: TaskState, source: str, offset: int, e: ev.Event, t: int) -> None:
    """Dispatch as processor/engine.py does (likes take the specialised path)."""
    if source == topics.LIKES:
        kind = e.WhichOneof("payload")
        post_id = getattr(e, kind).post_id  # type: ignore[arg-type]
        state.apply_like(post_id, e.actor_user_id, kind == "post_liked", offset, e, t)
    else:
        state.apply(source, offset, e, t)


def _random_log(seed: int) -> list[tuple[str, int, ev.Event, int]]:
    """A random mix on one partition: posts arriving late, likes and unlikes, comments
    and deletes (by the author, the post's author or someone else), post deletes."""
    import random

    rng = random.Random(seed)
    h = Harness()
    posts = [str(uuid.uuid4()) for _ in range(4)]
    authors = {p: f"a{i}" for i, p in enumerate(posts)}
    users = [f"u{i}" for i in range(6)]
    comments: list[tuple[str, str, str]] = []
    offsets = {topics.POSTS_BY_ID: 0, topics.LIKES: 0, topics.COMMENTS: 0}
    log: list[tuple[str, int, ev.Event, int]] = []
    for i in range(300):
        t = T0 + i * 1000
        post = rng.choice(posts)
        roll = rng.random()
        if roll < 0.04:
            e = h._event(authors[post], t)
            e.post_created.CopyFrom(ev.PostCreated(post_id=post, caption="c"))
            source = topics.POSTS_BY_ID
        elif roll < 0.05:
            e = h._event(rng.choice([authors[post], "u0"]), t)
            e.post_deleted.post_id = post
            source = topics.POSTS_BY_ID
        elif roll < 0.75:
            e = h._event(rng.choice(users), t)
            (e.post_liked if rng.random() < 0.7 else e.post_unliked).post_id = post
            source = topics.LIKES
        elif roll < 0.9 or not comments:
            cid = str(uuid.uuid4())
            user = rng.choice(users)
            comments.append((post, user, cid))
            e = h._event(user, t)
            e.comment_added.CopyFrom(ev.CommentAdded(post_id=post, comment_id=cid, text="x"))
            source = topics.COMMENTS
        else:
            cpost, cuser, cid = rng.choice(comments)
            e = h._event(rng.choice([cuser, authors[cpost], "u5"]), t)
            e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=cpost, comment_id=cid))
            source = topics.COMMENTS
        log.append((source, offsets[source], e, t))
        offsets[source] += 1
    return log


Log = list[tuple[str, int, ev.Event, int]]


def _snapshot(state: TaskState, log: Log) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for post_id in {getattr(e, e.WhichOneof("payload")).post_id for _, _, e, _ in log}:  # type: ignore[arg-type]
        rec = state.post(post_id)
        if rec is None:
            continue
        tr = rec.trending
        out[post_id] = (
            rec.status,
            rec.post.like_count,
            rec.post.comment_count,
            tr.counted_likers,
            tr.counted_commenters,
            round(tr.like_mass, 6),
            round(tr.comment_mass, 6),
        )
    return out


@pytest.mark.parametrize("seed", range(60))
def test_records_read_again_after_a_rebalance_change_nothing(seed: int) -> None:
    """After a rebalance hands a partition back, records fetched before it (and not
    yet committed) may be applied and then read again from the committed offset, in
    a different order across topics. The final state must be the same as reading
    every record once (processor/engine.py _after_rebalance relies on it)."""
    import random

    log = _random_log(seed)
    once = TaskState(DictStore(), CFG)
    for record in log:
        _apply_as_engine(once, *record)
    rng = random.Random(1000 + seed)
    committed = rng.randrange(len(log))
    stale = [r for r in log[committed : committed + 80] if rng.random() < 0.6]
    twice = TaskState(DictStore(), CFG)
    for record in log[:committed] + stale + log[committed:]:
        _apply_as_engine(twice, *record)
    assert _snapshot(twice, log) == _snapshot(once, log)


def test_a_repeated_like_dated_earlier_counts_once() -> None:
    """Clock skew between command services: the second like of a user is stamped
    earlier than the first. It only moves the first-engagement time."""
    h = Harness()
    h.create(P, "author", t=T0)
    h.like(P, "u1", t=T0 + 100)
    h.like(P, "u1", t=T0 + 50)
    assert h.counts(P) == (1, 0)
    h.like(P, "u1", t=T0 + 200, unlike=True)
    assert h.counts(P) == (0, 0)
