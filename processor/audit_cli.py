"""`python -m processor audit`: the audit's command line (one run, or --every)."""

from __future__ import annotations

import argparse
import sys

from mysocial.config import Settings
from processor import audit as audit_module
from processor.audit import audit, settle
from processor.audit_every import run_every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m processor audit", description=audit_module.__doc__
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for the processor to catch up",
    )
    parser.add_argument("--no-trending", action="store_true", help="only audit posts_with_counts")
    parser.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="run until stopped, a round every SECONDS, results on /metrics "
        "(processor/audit_every.py)",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.every:
        return run_every(settings, args.every, args.wait or 60.0, not args.no_trending)
    if args.wait and not settle(settings, args.wait):
        print(f"processor did not catch up within {args.wait}s", file=sys.stderr)
        return 3
    report = audit(settings, check_trending=not args.no_trending)
    for line in report.unrecomputable:
        print(f"NOT RECOMPUTED {line}")
    for line in report.mismatches[:50] + report.trending_mismatches[:50]:
        print(f"MISMATCH {line}")
    print(
        f"posts checked: {report.posts_checked} (live {report.live_posts}), "
        f"comments checked: {report.comments_checked}, mismatches: {len(report.mismatches)}, "
        f"invalid events skipped: {report.invalid_events}"
    )
    if report.trending_checked:
        print(
            f"trending entries checked: {report.trending_entries}, "
            f"mismatches: {len(report.trending_mismatches)}"
        )
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
