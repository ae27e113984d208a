"""Run the Quix Streams peer (bench/peers/quix_app.py) and measure it.

quixstreams pins confluent-kafka<2.13 while the project pins 2.16.1, so the app runs in
its own virtualenv, .cache/venv-quix, created on first use from
bench/peers/requirements-quix.txt (reinstalled when that file changes; later runs need no
network).

    python -m bench.peers.quix_peer --engagements N [--partitions 48] [--instances 1]
        [--commit-interval-s 0.1]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.peers.common import (
    PeerExited,
    create_output_topic,
    group_id,
    input_topics,
    main,
    run_peer,
)
from mysocial.config import PROJECT_ROOT, Settings

NAME = "quix"
REQUIREMENTS = PROJECT_ROOT / "bench" / "peers" / "requirements-quix.txt"
VENV = PROJECT_ROOT / ".cache" / "venv-quix"
COMMIT_INTERVAL_S = 0.1  # the project's processor commits every 100 ms (Quix default: 5 s)


def venv_python() -> Path:
    """The Quix venv's interpreter, creating or refreshing the venv when needed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    base = shutil.which("python3.11") or sys.executable
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(digest + "\n")
    return python


def quix_version(python: Path) -> str:
    code = (
        "import quixstreams, confluent_kafka as ck, google.protobuf as pb;"
        "print(f'quixstreams {quixstreams.__version__} (confluent-kafka {ck.__version__}, "
        "librdkafka {ck.libversion()[0]}, protobuf {pb.__version__})')"
    )
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def run_quix(
    settings: Settings,
    expected_input_events: int,
    timeout: float,
    commit_interval_s: float = COMMIT_INTERVAL_S,
    instances: int = 1,
) -> dict[str, Any]:
    """Run the Quix peer (see _run_quix_once); once more, from scratch, if it crashed.

    Why: Quix Streams itself sometimes fails mid-run (a KeyError in its consumer's
    buffer for a changelog message, in a fresh-clone CI run of the smoke suite); the
    peer is the yardstick, not the system under test, so one crash of it is recorded
    in the result ("crashed_before") instead of failing the whole benchmark.
    """
    try:
        return _run_quix_once(
            settings, expected_input_events, timeout, commit_interval_s, instances
        )
    except PeerExited as exc:
        print(f"[bench] P1 quix crashed, running it again: {exc}", file=sys.stderr)
        result = _run_quix_once(
            settings, expected_input_events, timeout, commit_interval_s, instances
        )
        result["crashed_before"] = str(exc)[-2000:]
        return result


def _run_quix_once(
    settings: Settings,
    expected_input_events: int,
    timeout: float,
    commit_interval_s: float = COMMIT_INTERVAL_S,
    instances: int = 1,
) -> dict[str, Any]:
    """Run the Quix peer over the input topics until it has consumed them; the result.

    instances: Quix apps (processes) in the consumer group; one uses one core.

    Keys: events_per_s (from process start to lag 0), events_per_s_excl_startup (from the
    first committed offsets on), seconds, startup_s, correct, mismatches, version, ...
    """
    python = venv_python()
    likes, comments = input_topics(settings)
    output = create_output_topic(settings, NAME)
    group = group_id(settings, NAME)
    states = [tempfile.mkdtemp(prefix="mysocial-peer-quix-state-") for _ in range(instances)]
    args = {
        "bootstrap": settings.bootstrap,
        "group": group,
        "likes": likes,
        "comments": comments,
        "output": output,
        "commit-interval": str(commit_interval_s),
    }
    base = [str(python), "-m", "bench.peers.quix_app"]
    for option, value in args.items():
        base += [f"--{option}", value]
    commands = [[*base, "--state-dir", state] for state in states]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    try:
        result = run_peer(
            NAME,
            settings,
            group,
            commands,
            expected_input_events,
            timeout,
            quix_version(python),
            PROJECT_ROOT,
            env,
        )
    finally:
        for state in states:
            shutil.rmtree(state, ignore_errors=True)
    result["commit_interval_ms"] = round(commit_interval_s * 1000)
    result["processing_guarantee"] = "exactly-once"
    return result


if __name__ == "__main__":
    main(NAME, run_quix, {"instances": (int, 1), "commit_interval_s": (float, COMMIT_INTERVAL_S)})
