"""python -m processor [run|audit ...]: run an instance, or audit the projections."""

import sys

from mysocial.startup import kafka_or_exit, settings_or_exit


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "audit":
        from processor.audit import main as audit_main

        return audit_main(args[1:])
    if args and args[0] not in ("run",):
        print("usage: python -m processor [run | audit [--wait SECONDS] [--no-trending]]")
        return 2
    settings = settings_or_exit("processor")
    kafka_or_exit(settings)
    from processor.engine import main as run_main

    return run_main(settings)


sys.exit(main())
