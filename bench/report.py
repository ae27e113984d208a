"""docs/BENCHMARKS.md: every figure and ratio of a full run, with the machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.freshness import keeps_up
from bench.stages import STAGES

TARGETS = {
    "T1_ratio_B1": (">=", 0.5),
    "T2_ratio_B3": (">=", 0.4),
    "T2_ratio_P1": (">=", 3.0),
    "T2_ratio_P2": (">=", 1.0),
    "T2_ratio_P3": (">=", 1.0),
    "T4_p99_ratio_P3": ("<=", 1.0),
    "T3_ratio": (">=", 0.6),
    "T4_p50_ms": ("<=", 30.0),
    "T4_p99_ms": ("<=", 100.0),
    "M1_bytes_per_like": ("<=", 200.0),
    "M1_bytes_per_post": ("<=", 200.0),
    "R1_query_warm_restart_s": ("<=", 5.0),
    "R1_command_warm_restart_s": ("<=", 5.0),
    "T6_goodput_ratio": (">=", 0.9),
    "T6_p99_ms": ("<=", 200.0),  # 2x the T4 p99 target
    "T6_abuser_p99_ratio": ("<=", 1.2),
    # Issue 17: fresh counts at half of what the front door takes.
    "T5_knee_ratio_T1": (">=", 0.5),
    "T4_p50_ms_at_100": ("<=", 10.0),
    "T4_p99_ms_at_100": ("<=", 25.0),
}


# Targets bound by wall-clock milliseconds (the knee's is its p99 <= 100 ms) rather
# than by a ratio to a baseline of the same run: CPU the hypervisor takes from this
# machine lengthens them whatever the code does.
WALL_CLOCK_TARGETS = frozenset(
    {
        "T4_p50_ms",
        "T4_p99_ms",
        "T4_p50_ms_at_100",
        "T4_p99_ms_at_100",
        "T5_knee_ratio_T1",
        "T6_p99_ms",
    }
)
# Share of the machine's CPU time stolen over a run above which those targets' misses
# say more about the neighbours than about the code (2026-12-03: 24.6 % over a run,
# 10-48 % in the freshness windows; the knee fell from 88/s to 0/s with the same code).
CONTENDED_STEAL = 0.05


def contended(steal: float | None) -> bool:
    """Whether a run (or window) lost enough CPU to its hypervisor to void wall-clock
    targets; unknown steal (older runs) counts as not contended."""
    return steal is not None and steal >= CONTENDED_STEAL


def verdict(key: str, value: float | None, steal: float | None = None) -> str:
    target = TARGETS.get(key)
    if target is None or value is None:
        return ""
    op, bound = target
    ok = value >= bound if op == ">=" else value <= bound
    if not ok and key in WALL_CLOCK_TARGETS and contended(steal):
        return f"{op} {bound:g}: MISSED on a contended machine ({_pct(steal)} stolen)"
    return f"{op} {bound:g}: {'met' if ok else 'MISSED'}"


def _pct(share: float | None) -> str:
    """A share as a percentage; "n/a" for runs recorded before it was measured."""
    return "n/a" if share is None else f"{share * 100:.1f} %"


def write_markdown(results: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    c = results["catchup"]
    ing = results["ingest"]
    lines = [
        "# Benchmarks",
        "",
        f"Run of `python -m bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{results['suite_seconds'] / 60:.1f} minutes. Machine: {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB RAM, {m['os']}; Python {m['python']}, Kafka {m['kafka']} "
        f"({m['java']}), librdkafka {m['librdkafka']}, grpcio {m['grpcio']}, protobuf "
        f"{m['protobuf']}. Everything (broker, services, load drivers) ran on this machine; "
        f"CPU time stolen by its hypervisor over the run: {_pct(m.get('cpu_steal'))}. "
        f"Figures marked median are the median of {results['sizes']['trials']} trials.",
        "",
    ]
    steal = m.get("cpu_steal")
    if contended(steal):
        lines += [
            f"**A contended machine:** its hypervisor took {_pct(steal)} of the CPU over "
            "this run (see the steal column of the windows below). Ratios to a baseline of "
            "the same run still compare; targets in wall-clock milliseconds (T4, the T5 "
            "knee's p99, T6's p99) measured the neighbours as much as the code, and a "
            "miss of theirs is marked so. Compare them only with a run whose steal was "
            "near 0.",
            "",
        ]
    lines += [
        "## Summary (bench/results/summary.json)",
        "",
        "| figure | value | target |",
        "|---|---|---|",
    ]
    for key, value in summary.items():
        if key in ("machine", "trials_per_figure"):
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} | {verdict(key, value, steal)} |")
    lines += [
        "",
        "## Every figure",
        "",
        "| id | what | figure |",
        "|---|---|---|",
        f"| B1 | no-op grpc.aio unary server, {ing['workers']} workers, ghz | "
        f"{ing['B1']['rps']:.0f} req/s (median; trials {_t(ing['B1'])}) |",
        f"| T1 | LikePost through the command service, acked by Kafka, {ing['workers']} workers | "
        f"{ing['T1_like']['rps']:.0f} req/s = {ing['T1_ratio_B1']:.2f} × B1; p50 "
        f"{ing['T1_like']['p50_ms']:.1f} ms, p99 {ing['T1_like']['p99_ms']:.1f} ms |",
        f"| T1 | AddComment through the command service | {ing['T1_comment']['rps']:.0f} req/s |",
        f"| B2 | raw idempotent acks=all producer, {results['B2']['value_bytes']}-byte events | "
        f"{results['B2']['msg_per_s']:.0f} msg/s |",
        f"| B3 | raw batched consume + protobuf parse, {c['B3']['processes']} process(es) | "
        f"{c['B3']['events_per_s_excl_startup']:.0f} events/s steady{_median(c['B3'])} ({c['B3']['events_per_s']:.0f} including process start) |",
        f"| T2 | processor catch-up, {c['T2']['instances']} instance(s), {c['T2']['events']} events "
        f"(counts + trending, exactly-once; audit {'agreed' if c['T2'].get('audit_ok') else 'DISAGREED'}) | "
        f"{c['T2']['events_per_s_excl_startup']:.0f} events/s steady{_median(c['T2'])} "
        f"({c['T2']['events_per_s']:.0f} including {c['T2']['startup_s']:.1f} s start-up) |",
    ]
    if "T2_python" in c:
        tp = c["T2_python"]
        lines.append(
            f"| T2 (Python rules) | the same catch-up with MYSOCIAL_PROCESSOR_CORE=python, one trial | "
            f"{tp['events_per_s_excl_startup']:.0f} events/s steady "
            f"(the compiled core: {c['T2']['events_per_s_excl_startup'] / max(tp['events_per_s_excl_startup'], 1e-9):.1f} ×) |"
        )
    for peer, name in (
        ("P1", "Quix Streams peer, same aggregation, exactly-once"),
        ("P2", "Kafka Streams peer (Java, exactly_once_v2)"),
        ("P3", "Apache Flink peer (Java, MiniCluster, checkpoints + Kafka sink exactly once)"),
    ):
        if peer in c:
            p = c[peer]
            lines.append(
                f"| {peer} | {name} | {p['events_per_s_excl_startup']:.0f} events/s steady"
                f"{_median(p)} ({p['events_per_s']:.0f} including start-up; "
                f"correct: {p.get('correct')}) |"
            )
    if "P3_latency" in c:
        p3 = c["P3_latency"]
        w = p3["latency"]
        lines.append(
            f"| P3 | Flink peer: like produced (acks=all) → its count in the output, read "
            f"committed, at {w['rate']:.0f}/s for {w['seconds']:.0f} s, checkpoint every "
            f"{p3['checkpoint_interval_ms']} ms | p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms "
            f"({w['samples']} likes, {w['missing']} not seen; correct: {p3.get('correct')}) |"
        )
    t3 = results["T3"]
    t4 = results["T4"]
    lines += [
        f"| T3 | updates delivered to {t3['subscribers']} WatchFeed subscribers | "
        f"{t3['query_msgs_per_s']:.0f} msg/s vs no-op streamer {t3['noop_msgs_per_s']:.0f} msg/s "
        f"= {t3['ratio']:.2f}{_t3_trials(t3)} |",
        f"| T4 | LikePost → WatchPosts at {t4['rate']:.0f}/s (50% of knee) | p50 {t4['p50_ms']:.1f} ms, "
        f"p99 {t4['p99_ms']:.1f} ms, p99.9 {t4['p999_ms']:.1f} ms ({t4['probe_samples']} probes) |",
        f"| T5 | knee: highest sustained rate (p99 ≤ 100 ms, lag stable, all on this machine) | "
        f"{results['T5']['knee_per_s']:.0f} commands/s |",
        *_fixed_and_capacity_lines(results),
        *_t6_lines(results.get("T6")),
        f"| B4 | raw Kafka produce → consume latency | p50 {results['B4']['p50_ms']:.1f} ms, "
        f"p99 {results['B4']['p99_ms']:.1f} ms |",
        f"| M1 | processor RSS slope, settled after catch-up (peak during it) | "
        f"{c['M1_processor']['bytes_per_like']:.1f} bytes per tracked like "
        f"({c['M1_processor']['peak_bytes_per_like']:.1f}); "
        f"{c['M1_processor']['settled_rss_bytes'][1] / 2**20:.0f} MiB settled, "
        f"{c['M1_processor']['peak_rss_bytes'][1] / 2**20:.0f} MiB peak at "
        f"{c['M1_processor']['likes'][1]} likes |",
        f"| M1 | query service RSS slope | {results['M1_query']['bytes_per_post']:.0f} bytes per post |",
        *_r1_lines(results["R1"]),
        "",
        "## Knee search (T5 windows)",
        "",
        (
            "Rates go up until one fails; the gap to the last that held is then halved "
            f"twice. A rate holds only if all {results['T5']['repeats']} of its windows do "
            "(bench/freshness.py)."
            if "repeats" in results["T5"]
            else "One window per rate, rates in increasing order up to the first that failed "
            "(this run predates the repeated, bisecting search)."
        ),
        "",
        "| rate/s | accepted/s | probe p50 ms | probe p99 ms | lag start → end | sustainable |",
        "|---|---|---|---|---|---|",
    ]
    for w in results["T5"]["windows"]:
        lines.append(
            f"| {w['rate']:.0f} | {w['accepted_per_s']:.0f} | {w['p50_ms']:.1f} | "
            f"{w['p99_ms']:.1f} | {w['lag_start']} → {w['lag_end']} | {w['sustainable']} |"
        )
    past = [results["T5"]["double_knee"]] if "double_knee" in results["T5"] else []
    fixed = [results["T4_100"]] if "T4_100" in results else []
    beyond = results["T5b"]["windows"][1:] if "T5b" in results else []
    lines += [
        "",
        *_breakdown_lines([*results["T5"]["windows"], results["T4"], *past, *fixed, *beyond]),
    ]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _r1_lines(r1: dict[str, Any]) -> list[str]:
    what = f"{r1['posts']} posts, {r1['comments']} comments"
    q, c = r1["query"], r1["command"]
    return [
        f"| R1 | query service: start to SERVING, {what} | cold {q['cold_s']:.1f} s "
        f"({q['cold_records_per_s']:.0f} records/s), warm restart {q['warm_s']:.1f} s; "
        f"RSS {q['rss_after_cold_bytes'] / 2**20:.0f} MiB = {q['rss_bytes_per_post']:.0f} B per post"
        f"{_disk(q)} |",
        f"| R1 | command service (1 worker): start to SERVING | cold {c['cold_s']:.1f} s "
        f"({c['cold_records_per_s']:.0f} records/s), warm restart {c['warm_s']:.1f} s; "
        f"RSS {c['rss_after_cold_bytes'] / 2**20:.0f} MiB{_disk(c)} |",
    ]


def _t3_trials(t3: dict[str, Any]) -> str:
    """Runs before T3 had trials lack them."""
    trials = t3.get("trials")
    return f" (median; trials {', '.join(f'{t:.2f}' for t in trials)})" if trials else ""


def _disk(service: dict[str, Any]) -> str:
    """The store's size after the cold start (runs before it was measured lack it)."""
    disk = service.get("disk_bytes")
    return f"; store on disk {disk / 2**20:.0f} MiB" if disk is not None else ""


def _t(result: dict[str, Any]) -> str:
    return ", ".join(f"{v:.0f}" for v in result.get("trials", []))


def _median(result: dict[str, Any]) -> str:
    """' (median; trials a, b, c)' when the figure is a median of several runs."""
    return f" (median; trials {_t(result)})" if result.get("trials") else ""


def _server_p99(t6: dict[str, Any]) -> str:
    """The command service's own produce p99 of the same window (older runs lack it)."""
    if t6.get("produce_p99_ms") is None:
        return ""
    return f" (the service's own produce p99: {t6['produce_p99_ms']:.1f} ms)"


def _t6_lines(t6: dict[str, Any] | None) -> list[str]:
    """T6 (overload at 3x the knee, quotas on) and its abuser figure."""
    if not t6:
        return []
    lines = [
        f"| T6 | overload: {t6['offered_per_s']:.0f}/s offered (3x knee) for the window, "
        f"quotas on | goodput {t6['goodput_per_s']:.0f}/s = {t6['goodput_ratio']:.2f} x knee "
        f"(target ≥ 0.9); p99 of acknowledged {t6['p99_ms']:.1f} ms (target ≤ 200)"
        f"{_server_p99(t6)}; "
        f"refused without RetryInfo {t6['refused_without_retry_info']}; acknowledged "
        f"missing from Kafka {t6['acknowledged_missing']}; audit "
        f"{'agrees' if t6['audit_ok'] else 'DISAGREES'} |",
    ]
    abuser = t6.get("abuser")
    if abuser:
        lines.append(
            f"| T6 | 50 users at {abuser['rate']:.0f}/s, {_abuser_windows(abuser)} | "
            f"p99 {abuser['p99_alone_ms']:.1f} → {abuser['p99_with_abuser_ms']:.1f} ms = "
            f"{abuser['p99_ratio']:.2f} (target ≤ 1.2){_pair_ratios(abuser)}; abuser accepted "
            f"{abuser['abuser']['accepted']}, refused {abuser['abuser']['errors']} |"
        )
    return lines


def _abuser_windows(abuser: dict[str, Any]) -> str:
    """How the abuser figure's windows ran (runs before 2026-12-02 had one of each)."""
    if "pairs" not in abuser:
        return "then beside one user at 500/s"
    return (
        f"without and beside one user at 500/s, {abuser['pairs']} pairs of "
        f"{abuser['window_s']:.0f} s windows interleaved, each side's calls pooled"
    )


def _pair_ratios(abuser: dict[str, Any]) -> str:
    ratios = abuser.get("pair_ratios")
    if not ratios:
        return ""
    return " (pair by pair: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"


def _fixed_and_capacity_lines(results: dict[str, Any]) -> list[str]:
    """T4 at the issue's fixed 100 likes/s, and T5b (lag stable, latency aside)."""
    lines = []
    if "T4_100" in results:
        w = results["T4_100"]
        lines.append(
            f"| T4 | LikePost → WatchPosts at {w['rate']:.0f}/s (fixed rate) | p50 "
            f"{w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, p99.9 {w['p999_ms']:.1f} ms "
            f"({w['probe_samples']} probes) |"
        )
    if "T5b" in results:
        b = results["T5b"]
        rates = ", ".join(
            f"{w['rate']:.0f}/s {'kept up' if keeps_up(w) else 'fell behind'}" for w in b["windows"]
        )
        lines.append(
            f"| T5b | capacity: highest rate with lag stable, latency aside | "
            f"{b['capacity_per_s']:.0f} commands/s (next step limited by {b['limited_by']}; "
            f"windows: {rates}) |"
        )
    return lines


def _breakdown_lines(windows: list[dict[str, Any]]) -> list[str]:
    """Per window: each stage's p50 / p99 (ms) from the services' histograms, and the
    CPU each part of the system used (cores), bench/stages.py."""
    rows = [w for w in windows if w.get("breakdown")]
    if not rows:
        return []
    names = [stage for stage, *_ in STAGES]
    roles = ("broker", "processor", "command", "query", "load")
    lines = [
        "## Where a like's time goes (T5 windows, T4, 2x the knee, T4 at 100/s, then T5b)",
        "",
        "Stages (bench/stages.py): ack = produce → acks=all; consumed = event → polled by "
        "the processor; committed = event → its transaction committed; commit = the commit "
        "itself; applied = projection record → applied by the query service; written = "
        "applied → stream message written. p50 / p99 in ms, from histogram buckets. CPU in "
        "cores over the window (load = the load generator and the probe); steal = the "
        "share of the machine's CPU time its hypervisor gave to other guests.",
        "",
        "| rate/s | " + " | ".join(names) + " | probe | CPU " + " / ".join(roles) + " | steal |",
        "|---" * (len(names) + 4) + "|",
    ]
    for w in rows:
        b = w["breakdown"]
        cells = [f"{b['stages'][n]['p50_ms']:.1f} / {b['stages'][n]['p99_ms']:.1f}" for n in names]
        cpu = " / ".join(f"{b['cpu_cores'].get(r, 0.0):.2f}" for r in roles)
        lines.append(
            f"| {w['rate']:.0f} | " + " | ".join(cells) + f" | {w['p50_ms']:.1f} / "
            f"{w['p99_ms']:.1f} | {cpu} | {_pct(b.get('cpu_steal'))} |"
        )
    return [*lines, ""]
