"""docs/BENCHMARKS.md marks wall-clock misses of a run whose CPU the hypervisor took."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import contended, verdict, write_markdown
from mysocial.config import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"


def test_a_wall_clock_miss_on_a_contended_machine_says_so() -> None:
    assert verdict("T5_knee_ratio_T1", 0.0, 0.246) == (
        ">= 0.5: MISSED on a contended machine (24.6 % stolen)"
    )
    assert verdict("T4_p99_ms_at_100", 358.2, 0.246).endswith("(24.6 % stolen)")


def test_ratio_targets_and_quiet_machines_keep_the_plain_verdict() -> None:
    assert verdict("T2_ratio_B3", 0.237, 0.246) == ">= 0.4: MISSED"  # a ratio: still compares
    assert verdict("T5_knee_ratio_T1", 0.0, 0.01) == ">= 0.5: MISSED"
    assert verdict("T5_knee_ratio_T1", 0.0, None) == ">= 0.5: MISSED"  # steal not recorded
    assert verdict("T4_p50_ms", 11.2, 0.3) == "<= 30: met"
    assert not contended(None) and not contended(0.049) and contended(0.05)


def _render(tmp_path: Path, steal: float) -> str:
    results = json.loads((RESULTS / "all.json").read_text())
    summary = json.loads((RESULTS / "summary.json").read_text())
    results["machine"]["cpu_steal"] = steal
    summary["T5_knee_ratio_T1"] = 0.0
    out = tmp_path / "BENCHMARKS.md"
    write_markdown(results, summary, out)
    return out.read_text()


def test_the_report_of_a_contended_run_warns_before_its_figures(tmp_path: Path) -> None:
    text = _render(tmp_path, 0.246)
    warning = text.index("**A contended machine:** its hypervisor took 24.6 %")
    assert warning < text.index("## Summary")
    assert "| T5_knee_ratio_T1 | 0 | >= 0.5: MISSED on a contended machine" in text


def test_the_report_of_a_quiet_run_has_no_warning(tmp_path: Path) -> None:
    text = _render(tmp_path, 0.0)  # (bench/NOTES.md, rendered at its end, may say "contended")
    assert "**A contended machine:**" not in text
    assert "MISSED on a contended machine" not in text
    assert "| T5_knee_ratio_T1 | 0 | >= 0.5: MISSED |" in text
