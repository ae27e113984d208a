"""What the peers share: output topic, ground truth, waiting for lag 0, the result, the
CLI, the Maven build of the Java ones.

A peer is a subprocess that reads `<ns>likes` and `<ns>comments` and writes, per post, the
like and comment counts as `COUNTS` (two big-endian int32) to `<ns>peer-<name>-counts`.
`run_peer` times it from process start until its consumer group has committed the end of
both input topics, stops it and checks the output table against a ground truth computed
here from the input topics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from google.protobuf.message import DecodeError

from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from mysocial.kafka.reader import group_lag, iter_topic, latest_by_key
from mysocial.kafka.topics import TopicSpec, ensure_topics
from mysocial.v1 import events_pb2 as ev

COUNTS = struct.Struct(">ii")  # like_count, comment_count
POLL_S = 0.2
PROTOS = [
    PROJECT_ROOT / "protos" / "mysocial" / "v1" / f for f in ("events.proto", "resources.proto")
]


@dataclass
class PostTruth:
    """The expected state of one post: who likes it and its comments (id -> live)."""

    likers: set[str] = field(default_factory=set)
    comments: dict[str, bool] = field(default_factory=dict)

    def counts(self) -> tuple[int, int]:
        return len(self.likers), sum(self.comments.values())


def output_topic(settings: Settings, name: str) -> str:
    """`<ns>peer-<name>-counts`."""
    return settings.topic(f"peer-{name}-counts")


def group_id(settings: Settings, name: str) -> str:
    """A fresh consumer group / application.id per run: reruns start from the beginning."""
    return settings.topic(f"peer-{name}-{uuid.uuid4().hex[:8]}")


def create_output_topic(settings: Settings, name: str) -> str:
    """Create the peer's compacted output topic, co-partitioned with likes; its name."""
    topic = output_topic(settings, name)
    spec = TopicSpec(topic, settings.copartitions, {"cleanup.policy": "compact"})
    ensure_topics(kafka_connection(settings).admin(), [spec])
    return topic


def input_topics(settings: Settings) -> list[str]:
    return [settings.topic(topics.LIKES), settings.topic(topics.COMMENTS)]


def ground_truth(settings: Settings, timeout: float = 300.0) -> dict[str, tuple[int, int]]:
    """Per post id, the (like_count, comment_count) the peers must produce.

    Same rules as the processor (and its audit, processor/truth.py) minus what needs the
    posts topic: the latest like/unlike of a user wins, a comment id counts once until
    deleted, deleting an unknown or deleted comment changes nothing. Records whose key
    does not match the payload's post id, or that do not decode, are ignored.
    """
    posts: dict[str, PostTruth] = {}
    for topic in input_topics(settings):
        for rec in iter_topic(settings, topic, timeout):
            if rec.key is None or rec.value is None:
                continue
            key = rec.key.decode()
            event = ev.Event()
            try:
                event.ParseFromString(rec.value)
            except DecodeError:  # skipped by the peers too
                continue
            kind = event.WhichOneof("payload")
            if kind not in ("post_liked", "post_unliked", "comment_added", "comment_deleted"):
                continue
            payload = getattr(event, kind)
            if payload.post_id != key:
                continue
            post = posts.setdefault(key, PostTruth())
            if kind == "post_liked":
                post.likers.add(event.actor_user_id)
            elif kind == "post_unliked":
                post.likers.discard(event.actor_user_id)
            elif kind == "comment_added":
                post.comments.setdefault(payload.comment_id, True)
            elif post.comments.get(payload.comment_id):
                post.comments[payload.comment_id] = False
    return {pid: p.counts() for pid, p in posts.items()}


def verify(settings: Settings, name: str) -> tuple[int, int]:
    """(posts checked, mismatches) of the peer's output table against the ground truth.

    A post the peer never wrote counts as (0, 0): a peer writes only when a count changes.
    """
    truth = ground_truth(settings)
    table = latest_by_key(settings, output_topic(settings, name))
    got = {
        k.decode(): COUNTS.unpack(v) if v is not None and len(v) == COUNTS.size else (-1, -1)
        for k, v in table.items()
    }
    mismatches = sum(
        1 for pid in truth.keys() | got.keys() if truth.get(pid, (0, 0)) != got.get(pid, (0, 0))
    )
    return len(truth.keys() | got.keys()), mismatches


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> list[int]:
    """SIGTERM to every process, SIGKILL to those still running after timeout; exit codes."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


@dataclass
class Timing:
    """Seconds from process start to the first committed progress and to lag 0."""

    first_commit_s: float
    lag_at_first_commit: int
    done_s: float


class PeerExited(RuntimeError):
    """A peer's process ended before it caught up (a crash of the peer itself)."""


def wait_caught_up(
    procs: Sequence[subprocess.Popen[bytes]],
    started: float,
    settings: Settings,
    group: str,
    expected: int,
    timeout: float,
    logs: Sequence[Path],
) -> Timing:
    """Poll the group's lag on the input topics every POLL_S until it is 0."""
    first: tuple[float, int] | None = None
    while True:
        lag = _lag(settings, group)
        now = time.monotonic() - started
        if lag is None:  # coordinator not ready yet (fresh broker or group)
            lag = expected
        if first is None and lag < expected:
            first = (now, lag)
        if lag == 0:
            assert first is not None
            return Timing(first[0], first[1], now)
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise PeerExited(f"peer exited with {proc.returncode}; {log}:\n{tail(log)}")
        if now > timeout:
            raise TimeoutError(f"peer still {lag} records behind after {timeout}s; logs: {logs}")
        time.sleep(POLL_S)


_RETRIABLE = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
}


def _lag(settings: Settings, group: str) -> int | None:
    """group_lag on the input topics; None while the group coordinator is not available."""
    try:
        return group_lag(settings, group, input_topics(settings))
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and (err.code() in _RETRIABLE or err.retriable()):
            return None
        raise


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def warm_up_broker(settings: Settings, timeout: float = 60.0) -> None:
    """Make the broker's internal topics exist before a peer is timed.

    A fresh broker creates __transaction_state and __consumer_offsets on first use, which
    would be charged to whichever peer runs first; a long-running cluster has them.
    """
    producer = Producer(
        kafka_connection(settings).config({"transactional.id": f"peer-warm-up-{uuid.uuid4().hex}"})
    )
    producer.init_transactions(timeout)
    producer.begin_transaction()
    producer.commit_transaction(timeout)
    deadline = time.monotonic() + timeout
    while _lag(settings, f"peer-warm-up-{uuid.uuid4().hex}") is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the group coordinator did not become available")
        time.sleep(POLL_S)


def maven_build(project: Path, jar: Path, what: str) -> list[str]:
    """Build a Java peer with Maven unless up to date; the java classpath entries.

    Up to date: target/.built holds the digest of the pom, the protos and src/. The build
    writes a thin jar plus target/classpath.txt (dependency jars in .cache/m2).
    """
    pom = project / "pom.xml"
    digest = hashlib.sha256()
    for path in [pom, *PROTOS, *sorted((project / "src").rglob("*"))]:
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    stamp = project / "target" / ".built"
    if not (stamp.exists() and stamp.read_text().strip() == digest.hexdigest() and jar.exists()):
        if shutil.which("mvn") is None:
            raise RuntimeError(f"Maven (mvn) is required to build {what}")
        repo = PROJECT_ROOT / ".cache" / "m2"
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(pom), f"-Dmaven.repo.local={repo}", "package"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building {what} failed:\n{result.stdout}")
        stamp.write_text(digest.hexdigest() + "\n")
    classpath = (project / "target" / "classpath.txt").read_text().strip()
    return [str(jar), *classpath.split(":")]


def java_version() -> str:
    """The first line of `java -version`."""
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return java.stderr.splitlines()[0]


WhileCaughtUp = Callable[[], dict[str, Any]]


def run_peer(
    name: str,
    settings: Settings,
    group: str,
    commands: Sequence[Sequence[str]],
    expected_input_events: int,
    timeout: float,
    version: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    while_caught_up: WhileCaughtUp | None = None,
) -> dict[str, Any]:
    """Start the commands (instances of one peer in one group), time them to lag 0 on
    the inputs, stop them, verify the output.

    while_caught_up: called once lag is 0, before the peer is stopped (a latency window,
    bench/peers/latency.py); its result is the result's "while_caught_up".
    """
    warm_up_broker(settings)
    folder = Path(tempfile.mkdtemp(prefix=f"mysocial-peer-{name}-"))
    logs = [folder / f"peer-{i}.log" for i in range(len(commands))]
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        for command, log in zip(commands, logs, strict=True):
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        list(command), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env
                    )
                )
        timing = wait_caught_up(
            procs, started, settings, group, expected_input_events, timeout, logs
        )
        extra = while_caught_up() if while_caught_up is not None else None
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise PeerExited(f"peer exited with {proc.returncode}; {log}:\n{tail(log)}")
    finally:
        exit_codes = stop(procs)
    posts, mismatches = verify(settings, name)
    steady_s = timing.done_s - timing.first_commit_s
    return {
        "peer": name,
        "events": expected_input_events,
        "partitions": settings.copartitions,
        "instances": len(commands),
        "seconds": round(timing.done_s, 3),
        "events_per_s": round(expected_input_events / timing.done_s),
        "startup_s": round(timing.first_commit_s, 3),
        "events_per_s_excl_startup": (
            round(timing.lag_at_first_commit / steady_s) if steady_s > 0 else None
        ),
        "correct": mismatches == 0,
        "mismatches": mismatches,
        "posts_checked": posts,
        "exit_codes": exit_codes,
        "version": version,
        "logs": str(folder),
        **({"while_caught_up": extra} if extra is not None else {}),
    }


Runner = Callable[..., dict[str, Any]]  # (settings, expected_input_events, timeout, **options)


def miscounted_peers(catchup: dict[str, Any]) -> list[str]:
    """The peer runs (of those that ran) whose counts differ from the backlog's truth, or
    whose latency window (Flink's) lost a like it was sent."""
    wrong: list[str] = [
        name
        for name in ("P1", "P2", "P3", "P3_latency")
        if name in catchup
        and not (catchup[name].get("correct") is True and catchup[name].get("mismatches") == 0)
    ]
    window = catchup.get("P3_latency", {}).get("latency")
    if window and (window["missing"] or window["warmup"]["missing"]):
        wrong.append("P3_latency window")
    return wrong


def main(
    name: str,
    runner: Runner,
    options: dict[str, tuple[type, Any]] | None = None,
    argv: list[str] | None = None,
) -> None:
    """`python -m bench.peers.<name>_peer`: broker, backlog, run the peer, print the result.

    options: the runner's keyword arguments offered as --flags, name -> (type, default).
    """
    from bench.backlog import BacklogSpec, write_backlog
    from bench.harness import broker, fresh_settings, machine

    parser = argparse.ArgumentParser(prog=f"python -m bench.peers.{name}_peer")
    parser.add_argument("--engagements", type=int, default=1_000_000)
    parser.add_argument("--posts", type=int, default=0, help="default: min(10000, N/10)")
    parser.add_argument("--partitions", type=int, default=48, help="likes/comments partitions")
    parser.add_argument("--timeout", type=float, default=1800.0)
    for option, (kind, default) in (options or {}).items():
        parser.add_argument(f"--{option.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    chosen = {option: getattr(args, option) for option in options or {}}
    posts = args.posts or max(1, min(10_000, args.engagements // 10))
    with broker() as bootstrap:
        settings = fresh_settings(bootstrap, copartitions=args.partitions)
        t0 = time.monotonic()
        written, _ = write_backlog(settings, BacklogSpec(posts=posts, engagements=args.engagements))
        backlog_s = time.monotonic() - t0
        result = runner(settings, written - posts, args.timeout, **chosen)
    result["backlog"] = {
        "posts": posts,
        "engagements": args.engagements,
        "write_s": round(backlog_s, 1),
    }
    import confluent_kafka

    result["machine"] = machine()
    # machine() takes version()[0], the first character since version() became a string.
    result["machine"]["confluent_kafka"] = confluent_kafka.__version__
    print(json.dumps(result, indent=2, sort_keys=True))
