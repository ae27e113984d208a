"""python -m processor [run|audit ...]: run an instance, or audit the projections."""

import signal
import sys

from mysocial import otel
from mysocial.config import Settings
from mysocial.process import tune_gc
from mysocial.startup import kafka_or_exit, metrics_or_exit, settings_or_exit


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "audit":
        from processor.audit_cli import main as audit_main

        return audit_main(args[1:])
    if args and args[0] not in ("run",):
        print("usage: python -m processor [run | audit [--wait SECONDS] [--no-trending]]")
        return 2
    settings = settings_or_exit("processor")
    kafka_or_exit(settings)
    served = metrics_or_exit(settings, "processor")
    otel.configure(settings.otlp_endpoint, "mysocial-processor")
    try:
        return run(settings)
    finally:
        otel.shutdown()
        if served is not None:
            served.close()


def run(settings: Settings) -> int:
    """One instance until SIGTERM or SIGINT (it finishes its transaction), or a fatal
    error; exit code 2 when it cannot start at all, which a restart would not fix."""
    from processor.core import CoreUnavailable
    from processor.engine import Processor, log
    from processor.local_store import StateLocked

    try:
        processor = Processor(settings)
    except CoreUnavailable as exc:
        log.error("processor_core_unavailable", error=str(exc))
        return 2
    except StateLocked as exc:
        log.error("processor_state_locked", error=str(exc))
        return 2
    tune_gc()
    signal.signal(signal.SIGTERM, processor.stop)
    signal.signal(signal.SIGINT, processor.stop)
    return processor.run()


sys.exit(main())
