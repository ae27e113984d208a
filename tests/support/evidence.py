"""What a failed fault scenario prints about the posts it got wrong: every record of
each post on the way from the command to the table, committed or not, so one CI run's
output can tell a lost event from a lost tombstone or a row written after it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from mysocial.config import Settings
from mysocial.internal.v1 import state_pb2 as st
from mysocial.kafka import topics
from mysocial.kafka.cluster import EmbeddedCluster, coordinator_partition
from mysocial.kafka.node import java, libs_dir
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
# Lines that only name __transaction_state among the partitions they fetch, thread
# starts, and a coordinator's retries to reach a node that is down (a bounce makes
# dozens, hiding what matters).
BROKER_NOISE = (
    "[ReplicaFetcher",
    "Starting (kafka.",
    "Creating new marker queue",
    "could not be established",
)


# What can leave a transaction ended on some partitions and not others, first: a skipped
# marker, markers cancelled, a fence or an abort; the routine lines after.
BROKER_ALARMS = (
    ("can be skipped",),
    ("cancel", "permanently", "fence", "abort", "rollback", "hanging", "timed out"),
)


def _weight(line: str) -> int:
    low = line.lower()
    return next((i for i, words in enumerate(BROKER_ALARMS) if any(w in low for w in words)), 9)


def broker_log_sizes(cluster: EmbeddedCluster) -> dict[int, int]:
    """Where each node's log ends now: a scenario's evidence starts there (the cluster
    serves the whole session)."""
    return {
        i: cluster.node(i).log_file.stat().st_size if cluster.node(i).log_file.exists() else 0
        for i in cluster.node_ids
    }


def broker_signs(cluster: EmbeddedCluster, since: dict[int, int], limit: int = 25) -> str:
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
        hits.sort(key=_weight)
        out += [f"\n  node {i}: {len(hits)} lines"] + [f"\n    {h}" for h in hits[:limit]]
    return "".join(out)


def _dump(files: list[Path], *flags: str) -> list[str]:
    """Kafka's DumpLogSegments over segment files: batches with their producer id and
    epoch, records, and control records (which transaction marker ended them)."""
    if not files:
        return []
    cmd = [java(), "-cp", f"{libs_dir()}/*", "org.apache.kafka.tools.DumpLogSegments", *flags]
    cmd += ["--files", ",".join(str(f) for f in sorted(files))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        return [f"DumpLogSegments failed ({result.returncode}): {result.stderr[-600:]}"]
    return result.stdout.splitlines()


_BATCH = re.compile(
    r"baseOffset: (\d+) lastOffset: (\d+) .*?producerId: (-?\d+) producerEpoch: (-?\d+)"
)
_MARKER = re.compile(r"endTxnMarker: (\w+) coordinatorEpoch: (\d+)")


def _batches(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(base offset, last offset, producer id, summary) per batch; a control batch's
    summary names its marker."""
    out: list[tuple[int, int, str, str]] = []
    for line in lines:
        if m := _BATCH.search(line):
            base, last, pid, epoch = m.groups()
            ts = re.search(r"CreateTime: (\d+)", line)
            what = f"{base}-{last} pid {pid} epoch {epoch} t={ts.group(1) if ts else '?'}"
            if "isTransactional: false" in line:
                what += " non-transactional"
            out.append((int(base), int(last), pid, what))
        elif (marker := _MARKER.search(line)) and out:
            base, last, pid, what = out[-1]
            out[-1] = (
                base,
                last,
                pid,
                f"{what} {marker.group(1)} (coordinator epoch {marker.group(2)})",
            )
    return out


def transactions_around(
    cluster: EmbeddedCluster, topic: str, partition: int, offsets: list[int], limit: int = 12
) -> str:
    """Per node holding topic-partition: the batch of each offset and every later batch
    of its producer (data and markers), so a record committed on one partition and
    aborted on another shows which transaction each belonged to and how it ended."""
    out = []
    for i in cluster.node_ids:
        folder = cluster.node(i).spec.data_dir / "logs" / f"{topic}-{partition}"
        batches = _batches(_dump(list(folder.glob("*.log")), "--deep-iteration"))
        pids = {pid for base, last, pid, _ in batches if any(base <= o <= last for o in offsets)}
        first = min(offsets)
        kept = [what for _, last, pid, what in batches if pid in pids and last >= first]
        out.append(f"\n  node {i} {topic}-{partition} from {first}:")
        out += [f"\n    {what}" for what in kept[:limit]]
    return "".join(out)


def transaction_log(cluster: EmbeddedCluster, transactional_ids: list[str], limit: int = 25) -> str:
    """The coordinator's record of each transactional id (state, producer id and epoch,
    partitions), as __transaction_state holds it on each node: its aborts, fences and
    epoch changes, and its last transitions."""
    out = []
    partitions = len(cluster.partitions("__transaction_state"))
    for txn_id in transactional_ids:
        p = coordinator_partition(txn_id, partitions)
        for i in cluster.node_ids:
            folder = cluster.node(i).spec.data_dir / "logs" / f"__transaction_state-{p}"
            lines = _dump(list(folder.glob("*.log")), "--transaction-log-decoder")
            hits = [_transition(line) for line in lines if f'"{txn_id}"' in line]
            out.append(f"\n  {txn_id} on node {i}: {len(hits)} transitions")
            out += [f"\n    {line}" for line in notable_transitions(hits, limit)]
    return "".join(out)


_STATUS_EPOCH = re.compile(r"^(\w+) pid (-?\d+) epoch (-?\d+)")


def notable_transitions(transitions: list[str], last: int = 25) -> list[str]:
    """The transitions that tell how a transaction ended, from a long history: every
    abort, fence and change of producer id or epoch, each with the transition before it
    (the state it left), and the last `last`; runs left out are counted. The decisive
    records of a failure can lie a hundred commits before the end of the log."""
    keep = set(range(max(0, len(transitions) - last), len(transitions)))
    before: tuple[str, str] | None = None
    for i, line in enumerate(transitions):
        m = _STATUS_EPOCH.match(line)
        if m is None:  # a tombstone or a record the decoder could not read
            keep.add(i)
            continue
        status, pid, epoch = m.groups()
        changed = before is not None and before != (pid, epoch)
        if changed or "Abort" in status or "Fence" in status or status == "Dead":
            keep.update({i - 1, i} if i else {i})
        before = (pid, epoch)
    out: list[str] = []
    skipped = 0
    for i, line in enumerate(transitions):
        if i not in keep:
            skipped += 1
            continue
        if skipped:
            out.append(f"... {skipped} transitions left out")
            skipped = 0
        out.append(line)
    return out


def _transition(line: str) -> str:
    """One __transaction_state record, short."""
    at = line.find("payload: ")
    try:
        data = json.loads(line[at + len("payload: ") :])["data"]
        partitions = data.get("transactionPartitions") or []
    except (ValueError, KeyError, TypeError, AttributeError):  # e.g. a tombstone
        return line[at:][:300]
    parts = ",".join(f"{t['topic'].split('.')[-1]}{t['partitionIds']}" for t in partitions)
    return (
        f"{data['transactionStatus']} pid {data['producerId']} epoch {data['producerEpoch']} "
        f"t={data['transactionLastUpdateTimestampMs']} {parts}"
    )
