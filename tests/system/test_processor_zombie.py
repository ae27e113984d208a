"""A zombie processor: stopped past its session timeout while another instance takes
its partitions, then resumed. Its transaction and its group generation are stale: it
must be fenced, and nothing it writes after resuming may become visible to
read_committed readers (counts stay exact, no post is re-keyed twice)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.reader import read_topic
from processor.headers import SRC_OFFSET, SRC_PARTITION
from tests.support.helpers import wait_until
from tests.support.services import ProcessorProc, command_service
from tests.support.workload import Workload, check_exact


def _assignments(proc: ProcessorProc) -> list[str]:
    """The instance's settled assignments so far (a partitions_assigned line each)."""
    return [
        line for line in proc.log_path.read_text().splitlines() if "partitions_assigned" in line
    ]


def _owns_everything(line: str, settings: Settings) -> bool:
    counts = f'"posts_with_counts/{settings.copartitions - 1}"'
    return "posts_with_counts/0" in line and counts in line


def _split(zombie: ProcessorProc, survivor: ProcessorProc, settings: Settings) -> bool:
    """Both instances run a share: a slow start can leave the survivor alone in the
    group at first, and pausing an instance that owns nothing proves nothing."""
    ours, theirs = _assignments(zombie), _assignments(survivor)
    return bool(ours and theirs) and not any(
        _owns_everything(x[-1], settings) for x in (ours, theirs)
    )


def test_a_resumed_zombie_is_fenced_and_changes_nothing(
    proc_settings: Settings, log_dir: Path
) -> None:
    settings = proc_settings.with_(log_format="json")
    zombie = ProcessorProc(settings, "a", log_dir)
    survivor = ProcessorProc(settings, "b", log_dir)
    zombie.start()
    survivor.start()
    progress = {"sent": 0}
    events: list[str] = []

    def conductor() -> None:
        while progress["sent"] < 2000:
            time.sleep(0.01)
        wait_until(lambda: _split(zombie, survivor, settings), 60, what="both to run a share")
        seen = len(_assignments(survivor))
        zombie.pause()
        events.append("paused")
        # Past the session timeout the group gives the survivor every partition.
        wait_until(
            lambda: any(_owns_everything(a, settings) for a in _assignments(survivor)[seen:]),
            60,
            what="takeover",
        )
        events.append("taken over")
        zombie.resume()
        events.append("resumed")

    thread = threading.Thread(target=conductor)
    try:
        with command_service(settings, log_dir) as addr:
            thread.start()
            workload = Workload(addr, seed=41, users=40)
            model = asyncio.run(workload.run(6000, lambda n: progress.__setitem__("sent", n)))
            thread.join(120)
            assert events == ["paused", "taken over", "resumed"]
            assert workload.errors == []
        zombie_log = zombie.log_path.read_text()
        # Resumed, it learns it lost everything: its transaction is aborted or it is
        # fenced and exits for its supervisor to restart it (either is correct).
        noticed = ("partitions_lost", "transaction_aborted", "processor_stopping_fatal")
        try:
            wait_until(
                lambda: any(word in zombie.log_path.read_text() for word in noticed),
                120,  # generous: on a loaded 2-core machine a resumed process is slow
                what="the zombie to notice it was fenced",
            )
        except AssertionError as exc:
            tail = zombie.log_path.read_text().splitlines()[-25:]
            raise AssertionError(f"{exc}; the zombie's last lines:\n" + "\n".join(tail)) from None
        zombie_log = zombie.log_path.read_text()
        if not zombie.alive():
            zombie.start()  # as make run's supervisor would; reported by the assert below
        check_exact(settings, model)
        # Each posts record was re-keyed into posts-by-id exactly once.
        rekeyed = Counter(
            (r.headers[SRC_PARTITION], r.headers[SRC_OFFSET])
            for r in read_topic(settings, settings.topic(topics.POSTS_BY_ID))
        )
        assert [k for k, n in rekeyed.items() if n > 1] == []
        assert (
            "processor_stopping_fatal" in zombie_log
            or "partitions_lost" in zombie_log
            or ("transaction_aborted" in zombie_log)
        )
    finally:
        zombie.resume()
        zombie.terminate()
        survivor.terminate()


def test_a_second_instance_with_the_same_id_ends_one_of_them_cleanly(
    proc_settings: Settings, log_dir: Path, tmp_path: Path
) -> None:
    """Two processes with one instance id on two hosts (a supervisor restarted an
    instance elsewhere while the first was not dead): the broker fences one of them as a
    static member and as a producer. The fenced one must exit with one log line, never
    live on doing nothing; on one host, the second cannot even open the first's state."""
    settings = proc_settings.with_(log_format="json")
    first = ProcessorProc(settings, "a", log_dir)
    (log_dir / "twin").mkdir()
    elsewhere = settings.with_(processor_state_dir=str(tmp_path / "other-host"))
    second = ProcessorProc(elsewhere, "a", log_dir / "twin")
    (log_dir / "same-host").mkdir()
    same_host = ProcessorProc(settings, "a", log_dir / "same-host")
    first.start()
    try:
        with command_service(settings, log_dir) as addr:
            workload = Workload(addr, seed=43, users=30)
            asyncio.run(workload.run(1000))
            wait_until(lambda: "partitions_assigned" in first.log_path.read_text(), 60)
            same_host.start()
            assert same_host.wait(30) == 2
            assert _errors(same_host) == ["processor_state_locked"]
            second.start()
            model = asyncio.run(workload.run(3000))
            assert workload.errors == []
            wait_until(lambda: not first.alive() or not second.alive(), 90, what="one twin to exit")
        survivor, fenced = (first, second) if first.alive() else (second, first)
        assert fenced.terminate() == 1
        assert _errors(fenced) == ["processor_stopping_fatal"]
        assert survivor.alive()
        check_exact(settings, model)
    finally:
        for proc in (first, second, same_host):
            proc.terminate()


def _errors(proc: ProcessorProc) -> list[str]:
    """The events of the processor's own error log lines (librdkafka adds its own
    diagnostics; a traceback would show as plain text)."""
    text = proc.log_path.read_text()
    assert "Traceback" not in text, text[-2000:]
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [
        line["event"]
        for line in lines
        if line.get("level") == "error" and line.get("component") != "librdkafka"
    ]
