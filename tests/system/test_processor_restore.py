"""Restore under load: an instance whose local state is gone rebuilds it from the
changelog in its main loop, while commands keep arriving, and the counts stay exact."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from pathlib import Path

from mysocial.config import Settings
from tests.support.helpers import wait_until
from tests.support.services import ProcessorProc, command_service
from tests.support.workload import Workload, check_exact


def _restored(log: str) -> list[int]:
    """restored_records of every completed assignment in a processor's log."""
    return [int(n) for n in re.findall(r"partitions_assigned.*?restored_records=(\d+)", log)]


def test_cold_restore_from_the_changelog_keeps_counts_exact(
    proc_settings: Settings, log_dir: Path
) -> None:
    processor = ProcessorProc(proc_settings, "a", log_dir)
    state = Path(proc_settings.processor_state_dir)
    processor.start()
    progress = {"sent": 0}
    errors: list[BaseException] = []

    def wipe_and_restart() -> None:
        try:
            while progress["sent"] < 3000:
                time.sleep(0.01)
            assert processor.terminate() == 0
            shutil.rmtree(state)  # the local RocksDB is gone: only the changelog is left
            processor.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wipe_and_restart)
    try:
        with command_service(proc_settings, log_dir) as addr:
            thread.start()
            workload = Workload(addr, seed=5, users=40)
            model = asyncio.run(workload.run(6000, lambda n: progress.__setitem__("sent", n)))
            thread.join(60)
            assert errors == [] and workload.errors == []
        check_exact(proc_settings, model)
        wait_until(
            lambda: len(_restored(processor.log_path.read_text())) >= 2,
            timeout=30,
            what="both assignments complete",
        )
        first, second = _restored(processor.log_path.read_text())[:2]
        assert first == 0  # a fresh instance on empty topics has nothing to replay
        assert second > 0  # the restart replayed the changelog into the empty store
    finally:
        processor.terminate()
