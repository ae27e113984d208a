"""Workloads and a harness for running the compiled core (processor_native) and the
Python reference (PyCore over processor/rules.py) side by side, as the engine does:
random workloads, plain message, store, batch and producer stand-ins (no Kafka), and
`Run`/`drive`, which put both cores through the same commits, aborts and restarts."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.kafka.partitioning import partition_for
from mysocial.v1 import events_pb2 as ev
from mysocial.v1 import resources_pb2 as res
from processor.core import ROUTE_OF_CONTRACT, Core, Stop, apply_checked, make_core
from processor.headers import SRC_OFFSET, SRC_PARTITION
from processor.trending import TrendingConfig

PARTITIONS = 4
T0 = 1_800_000_000_000
CFG = TrendingConfig(half_life_s=60, like_weight=1.0, comment_weight=3.0, min_distinct_users=2)
# Equal weights: only the explicit role tells a liker from a commenter.
EQUAL = TrendingConfig(half_life_s=60, like_weight=2.0, comment_weight=2.0, min_distinct_users=2)
TOPIC = {
    topics.POSTS_BY_ID: "ns.posts-by-id",
    topics.LIKES: "ns.likes",
    topics.COMMENTS: "ns.comments",
}
ROUTES = {name: ROUTE_OF_CONTRACT[contract] for contract, name in TOPIC.items()}
CONTRACT = {name: contract for contract, name in TOPIC.items()}


@dataclass
class Msg:
    """What the core reads of a confluent_kafka.Message."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp: int
    _headers: list[tuple[str, bytes | None]] | None = None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


@dataclass
class DictStore:
    """A task's committed store (TaskStore's read side over a dict)."""

    data: dict[bytes, bytes] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]

    def keys(self, *prefixes: bytes) -> Iterator[bytes]:
        for prefix in prefixes:
            yield from sorted(k for k in self.data if k.startswith(prefix))


class Batch:
    """rocksdict.WriteBatch's put/delete, collected."""

    def __init__(self) -> None:
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))


class Producer:
    """Producer.produce/poll, recording the changelog; fails now and then with a full
    local queue (BufferError) to exercise the retry."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.records: list[tuple[str, bytes | None, bytes, int, bool]] = []

    def produce(self, topic: str, value: Any, key: Any, partition: int, **kw: Any) -> None:
        if self.rng.random() < 0.02:
            raise BufferError("Local: Queue full")
        self.records.append((topic, value, key, partition, "on_delivery" in kw))

    def poll(self, timeout: float) -> int:
        return 0


# -- a random workload ---------------------------------------------------------------------


def _ids(rng: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def _event(actor: str, t: int, rng: random.Random) -> ev.Event:
    e = ev.Event(event_id=uuid.UUID(int=rng.getrandbits(128)).hex, actor_user_id=actor)
    if rng.random() < 0.95:
        ts = Timestamp()
        ts.FromMilliseconds(t)
        e.occurred_at.CopyFrom(ts)
    roll = rng.random()
    if roll < 0.8:  # from few calls, so ids repeat (a retried command keeps its id)
        e.correlation_id = f"cid-{rng.randrange(40)}"
        if roll < 0.4:
            e.traceparent = f"00-{rng.randrange(1, 40):032x}-{rng.randrange(1, 9):016x}-01"
    return e


def _odd_encoding(e: ev.Event, rng: random.Random) -> bytes:
    """A valid encoding protobuf reads as e, written the way few producers would."""
    raw = e.SerializeToString()
    roll = rng.random()
    if roll < 0.3:  # an unknown field (a newer schema's) in front
        return b"\xa2\x06\x03new" + raw
    if roll < 0.5:  # the actor twice: the last one wins
        dup = ev.Event(actor_user_id="someone-else")
        return dup.SerializeToString() + raw
    if roll < 0.7:  # a known field with another wire type (Python keeps it as unknown)
        return raw + b"\x18\x01"
    if roll < 0.85:  # the payload switched: another oneof member first
        other = ev.Event()
        other.post_unliked.post_id = "x"
        return other.SerializeToString() + raw
    return raw + b"\xfa\x3f\x00"  # an unknown empty sub-message at a high field number


def _bad(rng: random.Random, post: str) -> bytes:
    """Something to dead-letter."""
    roll = rng.random()
    if roll < 0.3:
        return b"\x0a\xff\xff"  # truncated
    if roll < 0.5:
        e = ev.Event(event_id="x", actor_user_id="bad actor!")
        e.post_liked.post_id = post
        return e.SerializeToString()
    if roll < 0.7:
        e = ev.Event(event_id="x", actor_user_id="u1")
        e.post_liked.post_id = post.upper()
        return e.SerializeToString()
    e = ev.Event(event_id="", actor_user_id="u1")
    e.post_liked.post_id = post
    return e.SerializeToString()


def workload(seed: int, n: int = 600) -> list[Msg]:
    """Records over PARTITIONS partitions: posts arriving late, likes and unlikes,
    comments and deletes (allowed or not), post deletes, retried creates, invalid
    records, odd but valid encodings, future and missing event times."""
    rng = random.Random(seed)
    posts = _ids(rng, 10)
    authors = {p: f"a{i % 3}" for i, p in enumerate(posts)}
    media = [res.Media(media_id="ab" * 32, content_type="image/png", width=3, height=4)]
    users = [f"u{i}" for i in range(8)] + ["a0"]
    comments: list[tuple[str, str, str]] = []
    offsets: dict[tuple[str, int], int] = {}
    out: list[Msg] = []
    for i in range(n):
        t = T0 + i * 700 + rng.randrange(-2000, 2000)  # some clock skew
        post = rng.choice(posts if rng.random() < 0.97 else _ids(rng, 1))
        roll = rng.random()
        headers: list[tuple[str, bytes | None]] | None = None
        if roll < 0.06:
            e = _event(authors.get(post, "a1"), t, rng)
            e.post_created.CopyFrom(
                ev.PostCreated(post_id=post, caption="c", media=media if i % 2 else [])
            )
            source = topics.POSTS_BY_ID
            headers = [(SRC_PARTITION, b"0"), (SRC_OFFSET, str(i).encode())]
        elif roll < 0.08:
            e = _event(rng.choice([authors.get(post, "a1"), "u0"]), t, rng)
            e.post_deleted.post_id = post
            source = topics.POSTS_BY_ID
            headers = [(SRC_OFFSET, str(i).encode())] if rng.random() < 0.9 else None
        elif roll < 0.7:
            e = _event(rng.choice(users), t, rng)
            (e.post_liked if rng.random() < 0.75 else e.post_unliked).post_id = post
            source = topics.LIKES
        elif roll < 0.88 or not comments:
            cid = _ids(rng, 1)[0] if rng.random() < 0.9 or not comments else comments[0][2]
            user = rng.choice(users)
            comments.append((post, user, cid))
            e = _event(user, t, rng)
            e.comment_added.CopyFrom(
                ev.CommentAdded(post_id=post, comment_id=cid, text=f"hi {rng.randrange(1000)} ü")
            )
            source = topics.COMMENTS
        else:
            cpost, cuser, cid = rng.choice(comments)
            post = cpost
            e = _event(rng.choice([cuser, authors.get(cpost, "a1"), "u5"]), t, rng)
            e.comment_deleted.CopyFrom(ev.CommentDeleted(post_id=cpost, comment_id=cid))
            source = topics.COMMENTS
        partition = partition_for(post.encode(), PARTITIONS)
        value = e.SerializeToString()
        key: bytes | None = post.encode()
        bad = rng.random()
        if bad < 0.03:
            value = _bad(rng, post)
        elif bad < 0.05:
            partition = (partition + 1) % PARTITIONS  # misrouted
        elif bad < 0.12:
            value = _odd_encoding(e, rng)
        elif bad < 0.14:
            key = None
        tp = (TOPIC[source], partition)
        offset = offsets.get(tp, 0)
        offsets[tp] = offset + 1
        accepted = T0 + i * 700 + (0 if rng.random() < 0.9 else -5000)  # future events
        out.append(Msg(TOPIC[source], partition, offset, key, value, accepted, headers))
    return out


# -- running a core like the engine does ------------------------------------------------------


class Run:
    """One core over the workload: commits, aborts (rewind to the last commit) and
    restarts (a new core over the committed stores), as the engine does them."""

    def __init__(self, kind: str, max_pending: int, cfg: TrendingConfig = CFG) -> None:
        self.kind = kind
        self.max_pending = max_pending
        self.cfg = cfg
        self.stores = {p: DictStore() for p in range(PARTITIONS)}
        self.core = self._new_core()
        self.dead: list[tuple[int, str]] = []
        self.changes: list[list[tuple[str, Any, Any, Any]]] = []
        # Per commit: the post_comments records, (partition, offset, post, comment, record).
        self.comments: list[list[tuple[int, int, str, str, Any]]] = []
        self.comment_values: list[bytes | None] = []  # post_comments values, as encoded
        self.changelog: list[dict[bytes, Any]] = []
        self.positions: dict[tuple[str, int], int] = {}

    def _new_core(self) -> Core:
        core = make_core(self.kind, ROUTES, PARTITIONS, self.cfg, max_pending=self.max_pending)
        for p, store in self.stores.items():
            core.add_task(p, store)  # type: ignore[arg-type]
        return core

    def process(self, msgs: list[Msg], owned: set[int]) -> None:
        consumed: dict[tuple[str, int], int] = {}
        i = 0
        while True:
            i, why = self.core.process(msgs, i, self.positions, consumed)  # type: ignore[arg-type]
            if why == Stop.DONE:
                return
            assert why == Stop.PYTHON
            msg = msgs[i]
            i += 1
            self.positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            source = CONTRACT[msg.topic()]
            reason = apply_checked(
                self.core,
                msg,  # type: ignore[arg-type]
                source,
                PARTITIONS,
                msg.partition() in owned,
            )
            if reason is not None:
                self.dead.append((msg.offset(), reason))

    def commit(
        self, rng: random.Random, partitions: tuple[int, ...] = tuple(range(PARTITIONS))
    ) -> None:
        producer = Producer(rng)
        changes = []
        comments = []
        for p in partitions:
            for offset, post_id, comment_id, raw in self.core.drain_comments(p):
                parsed = None if raw is None else res.Comment.FromString(raw)
                comments.append((p, offset, post_id, comment_id, parsed))
                self.comment_values.append(raw)
            for post_id, output, record, traces in self.core.drain(p):
                changes.append((post_id, _parsed_output(output), parsed_record(record), traces))
            self.core.produce_changelog(p, producer, "ns.changelog", lambda err, msg: None)  # type: ignore[arg-type]
            batch = Batch()
            self.core.write_batch(p, batch, b"")
            for key, value in batch.ops:
                if value is None:
                    self.stores[p].data.pop(key, None)
                else:
                    self.stores[p].data[key] = value
        last = {}
        for _, _, _, p, reports in producer.records:
            last[p] = reports
        assert all(last.values()), "the last changelog record of a partition reports back"
        self.changes.append(sorted(changes, key=lambda c: c[0]))
        self.comments.append(comments)
        self.changelog.append(
            {
                bytes([p]) + key: _parsed_value(key, value)
                for _, value, key, p, _ in producer.records
            }
        )

    def abort(self) -> None:
        for p in range(PARTITIONS):
            self.core.discard(p)

    def restart(self) -> None:
        self.core = self._new_core()

    def snapshot(self) -> dict[int, dict[bytes, Any]]:
        return {
            p: {k: _parsed_value(k, v) for k, v in s.data.items()} for p, s in self.stores.items()
        }


def parsed_record(raw: bytes) -> st.PostRecord:
    rec = st.PostRecord()
    rec.ParseFromString(raw)
    return rec


def _parsed_output(raw: bytes | None) -> ev.PostWithCounts | None:
    if raw is None:
        return None
    out = ev.PostWithCounts()
    out.ParseFromString(raw)
    return out


def _parsed_value(key: bytes, value: bytes | None) -> Any:
    """A stored value as the message it encodes (bytes equal is not required, though
    test_native_core checks that it holds for records both sides encode)."""
    if value is None:
        return None
    tag = key[:1]
    if tag == b"P":
        return parsed_record(value)
    if tag == b"C":
        c = st.CommentRecord()
        c.ParseFromString(value)
        return c
    if tag == b"Q":
        q = st.PendingEvent()
        q.ParseFromString(value)
        e = ev.Event()
        e.ParseFromString(q.event)
        e.DiscardUnknownFields()
        return (q.source, q.offset, q.accepted_at_ms, e)
    return value


def drive(seed: int, max_pending: int = 100_000, cfg: TrendingConfig = CFG) -> tuple[Run, Run]:
    """The same workload, commits, aborts and restarts through both cores."""
    msgs = workload(seed)
    runs = (Run("python", max_pending, cfg), Run("native", max_pending, cfg))
    rng = random.Random(seed * 7 + 1)
    committed = 0
    owned = set(range(PARTITIONS))
    while committed < len(msgs):
        end = min(len(msgs), committed + rng.randrange(1, 80))
        action = rng.random()
        for run in runs:
            run.process(msgs[committed:end], owned)
        if action < 0.12:
            for run in runs:
                run.abort()  # the engine rewinds to the last commit and reads again
            continue
        for i, run in enumerate(runs):
            run.commit(random.Random(seed + i))
        committed = end
        if action > 0.93:
            for run in runs:
                run.restart()
    return runs


# -- scripted records -------------------------------------------------------------------------


def msg_of(source: str, offset: int, e: ev.Event, headers: Any = None) -> Msg:
    """`e` as a record on `source`, keyed and partitioned by its post."""
    post_id = getattr(e, e.WhichOneof("payload") or "").post_id
    partition = partition_for(post_id.encode(), PARTITIONS)
    return Msg(source, partition, offset, post_id.encode(), e.SerializeToString(), T0, headers)


def like_event(post: str, user: str) -> ev.Event:
    """`user` likes `post`."""
    e = ev.Event(event_id=uuid.uuid4().hex, actor_user_id=user)
    e.post_liked.post_id = post
    return e
