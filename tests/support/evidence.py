"""What a failed fault scenario prints about the posts it got wrong: every record of
each post on the way from the command to the table, committed or not, so one CI run's
output can tell a lost event from a lost tombstone or a row written after it."""

from __future__ import annotations

from mysocial.config import Settings
from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.reader import Record, read_topic
from mysocial.post_comments import SRC_OFFSET
from mysocial.v1 import events_pb2 as ev


def _describe(name: str, rec: Record, committed: set[tuple[int, int]]) -> str:
    where = f"{name}[{rec.partition}]@{rec.offset}"
    if name == topics.POSTS_WITH_COUNTS:
        if rec.value is None:
            what = "tombstone"
        else:
            row = ev.PostWithCounts()
            row.ParseFromString(rec.value)
            what = f"row likes={row.post.like_count} comments={row.post.comment_count}"
    elif name == topics.PROCESSOR_CHANGELOG:
        if rec.value is None:
            what = "state deleted"
        else:
            post = st.PostRecord.FromString(rec.value)
            what = (
                f"state {st.PostStatus.Name(post.status)} likes={post.post.like_count} "
                f"posts_through={post.posts_applied_through} "
                f"likes_through={post.likes_applied_through}"
            )
    else:
        event = ev.Event()
        event.ParseFromString(rec.value or b"")
        what = f"{event.WhichOneof('payload')} by {event.actor_user_id}"
    src = rec.headers.get(SRC_OFFSET)
    extra = f" src-offset={src.decode()}" if src else ""
    state = "" if (rec.partition, rec.offset) in committed else " NOT COMMITTED"
    return f"{where} t={rec.timestamp_ms} {what}{extra}{state}"


def _post_id_of(name: str, rec: Record) -> str | None:
    if name == topics.PROCESSOR_CHANGELOG:  # P<post id>: the post's own state
        key = rec.key or b""
        return key[1:].decode() if key[:1] == b"P" else None
    if name != topics.POSTS:
        return rec.key.decode() if rec.key else None
    event = ev.Event()
    event.ParseFromString(rec.value or b"")
    kind = event.WhichOneof("payload")
    return getattr(event, kind).post_id if kind else None


def post_history(settings: Settings, post_ids: list[str]) -> dict[str, list[str]]:
    """Per post: its records in posts, posts-by-id, the processor's changelog (its
    state) and posts_with_counts, in log order,
    each marked when read_committed readers do not see it (aborted or still open)."""
    out: dict[str, list[str]] = {p: [] for p in post_ids}
    for name in (
        topics.POSTS,
        topics.POSTS_BY_ID,
        topics.PROCESSOR_CHANGELOG,
        topics.POSTS_WITH_COUNTS,
    ):
        topic = settings.topic(name)
        committed = {(r.partition, r.offset) for r in read_topic(settings, topic)}
        for rec in read_topic(settings, topic, isolation="read_uncommitted"):
            post_id = _post_id_of(name, rec)
            if post_id in out:
                out[post_id].append(_describe(name, rec, committed))
    return out


def format_history(history: dict[str, list[str]]) -> str:
    """A post per block, a record per line."""
    return "".join(
        f"\n  {post_id}:" + "".join(f"\n    {line}" for line in lines)
        for post_id, lines in history.items()
    )


# What a broker logs when a transaction's markers can go astray: the coordinator skips
# the marker of a partition without a leader (docs/OPERATIONS.md, "Hanging
# transactions"), and the warnings of the transaction and replica machinery.
BROKER_SIGNS = ("can be skipped", "couldn't find leader", "transaction", "txn", "marker")
# Lines that only name __transaction_state among the partitions they fetch, and thread
# starts.
BROKER_NOISE = ("[ReplicaFetcher", "Starting (kafka.", "Creating new marker queue")


def broker_log_sizes(cluster: EmbeddedCluster) -> dict[int, int]:
    """Where each node's log ends now: a scenario's evidence starts there (the cluster
    serves the whole session)."""
    return {
        i: cluster.node(i).log_file.stat().st_size if cluster.node(i).log_file.exists() else 0
        for i in cluster.node_ids
    }


def broker_signs(cluster: EmbeddedCluster, since: dict[int, int], limit: int = 15) -> str:
    """The lines of each node's log since `since` that speak of transactions or markers."""
    out = []
    for i in cluster.node_ids:
        path = cluster.node(i).log_file
        if not path.exists():
            continue
        with open(path, "rb") as f:
            f.seek(since.get(i, 0))
            lines = f.read().decode(errors="replace").splitlines()
        hits = [
            line[:400]
            for line in lines
            if any(s in line.lower() for s in BROKER_SIGNS)
            and not any(noise in line for noise in BROKER_NOISE)
        ]
        out += [f"\n  node {i}: {len(hits)} lines"] + [f"\n    {h}" for h in hits[:limit]]
    return "".join(out)
