"""What a run reports: the machine, the figures of each scenario (median and spread over
the runs), the table, the comparison with an earlier ``--json`` file, and the top frames
of a py-spy profile.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .scenarios import BUYER_MS, SCENARIOS

#: metric -> True when higher is better (for --compare); the keys every result carries
METRICS: dict[str, bool] = {
    "pings_per_s": True, "posts_per_s": True,
    "latency_p50_ms": False, "latency_p95_ms": False, "latency_p99_ms": False, "latency_max_ms": False,
    "overhead_p50_ms": False, "overhead_p95_ms": False, "overhead_p99_ms": False, "overhead_max_ms": False,
    "auction_p50_ms": False, "auction_p99_ms": False, "post_p50_ms": False, "post_p99_ms": False,
    "errors": False, "cpu_us_per_ping": False, "pings_per_core_s": True, "exchange_cpu": False, "loadgen_cpu": False,
    "buyers_cpu": False, "redis_cpu": False, "rss_mb": False,
}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "commit": _git_commit()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[2])
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def top_frames(collapsed: str, n: int = 30) -> str:
    """The functions with the most samples, on top of the stack (self) and anywhere in it (total)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = [f"{samples} samples"]
    for title, counts in (("self", own), ("total (self + callees)", total)):
        lines += ["", f"{title}:", f"{'%':>6}  frame"]
        for frame, count in sorted(counts.items(), key=lambda kv: -kv[1])[:n]:
            lines.append(f"{100 * count / max(samples, 1):6.1f}  {frame}")
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    """``handle (aiohttp/web_protocol.py:512)`` -> ``handle (aiohttp/web_protocol.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank over sorted values."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summarize(name: str, args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every metric over the runs; ``spread`` holds min and max of each."""
    first = runs[0]
    summary: dict[str, Any] = {k: first[k] for k in ("scenario", "mode", "offered_rate", "concurrency",
                                                        "workers", "store")}
    summary["about"] = SCENARIOS[name].about
    summary["runs"] = len(runs)
    summary["spread"] = {}
    for key in [*METRICS, "rss_mb_total", "pings", "posts"]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            summary[key] = None
            continue
        summary[key] = round(statistics.median(values), 3)
        summary["spread"][key] = [min(values), max(values)]
    summary["error_kinds"] = _sum_dicts(r["error_kinds"] for r in runs)
    summary["outcomes"] = _sum_dicts(r["outcomes"] for r in runs)
    summary["warnings"] = sorted({w for r in runs for w in r.get("warnings", [])})
    summary["each_run"] = runs if len(runs) > 1 else []
    return summary


def _sum_dicts(dicts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def _cell(result: dict[str, Any], key: str, fmt: str) -> str:
    value = result.get(key)
    if value is None:
        return "-"
    text = format(value, fmt)
    spread = result.get("spread", {}).get(key)
    if result.get("runs", 1) > 1 and spread and spread[0] != spread[1]:
        text += f" [dim]({format(spread[0], fmt)}–{format(spread[1], fmt)})[/]"
    return text


def table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    s = report["settings"]
    how = f"open loop at {s['rate']:g}/s" if s["mode"] == "open" else f"closed loop, {s['concurrency']} in flight"
    title = (f"{how}, {s['duration_s']:g} s, {s['workers']} worker(s), {s['store']} store, "
             f"{s.get('ledger', 'sqlite')} books; "
             f"overhead = seller latency - {BUYER_MS:g} ms buyer latency")
    t = Table(title=title, title_justify="left")
    columns = [("scenario", None, ""), ("pings/s", "pings_per_s", ",.0f"), ("posts/s", "posts_per_s", ",.0f"),
               ("p50 ms", "latency_p50_ms", ".1f"), ("p95 ms", "latency_p95_ms", ".1f"),
               ("p99 ms", "latency_p99_ms", ".1f"), ("max ms", "latency_max_ms", ".1f"),
               ("ovh p99 ms", "overhead_p99_ms", ".1f"), ("errors", "errors", "d"),
               ("CPU µs/ping", "cpu_us_per_ping", ",.0f"), ("pings/core-s", "pings_per_core_s", ",.0f"),
               ("exch CPU", "exchange_cpu", ".2f"),
               ("gen+buyers CPU", None, ""), ("RSS MB", "rss_mb", ".0f")]
    for header, _, _ in columns:
        t.add_column(header, justify="left" if header == "scenario" else "right")
    for result in report["results"]:
        row = []
        for header, key, fmt in columns:
            if header == "scenario":
                row.append(result["scenario"] + (f" ×{result['runs']}" if result["runs"] > 1 else ""))
            elif key is None:
                row.append(f"{result['loadgen_cpu']:.2f}+{result['buyers_cpu']:.2f}")
            else:
                value = result.get(key)
                row.append(_cell(result, key, fmt) if not (key == "errors" and value is not None)
                           else str(int(value)))
        t.add_row(*row)
    return t


def compare_table(report: dict[str, Any], previous: dict[str, Any], path: str) -> Any:
    from rich.table import Table

    t = Table(title=f"ratios: this run / {path} (>1 is more; ✓ better, ✗ worse by over 5%)", title_justify="left")
    for header in ("scenario", "metric", "now", "before", "ratio", ""):
        t.add_column(header, justify="left" if header in ("scenario", "metric") else "right")
    old = {(r["scenario"], r["mode"]): r for r in previous.get("results", [])}
    for result in report["results"]:
        before = old.get((result["scenario"], result["mode"]))
        if before is None:
            t.add_row(result["scenario"], "(not in the earlier file)", "", "", "", "")
            continue
        for metric, higher_better in METRICS.items():
            now, then = result.get(metric), before.get(metric)
            if now is None or then is None:
                continue
            ratio = now / then if then else (1.0 if now == then else math.inf)
            mark = ""
            if abs(ratio - 1) > 0.05:
                mark = "✓" if (ratio > 1) == higher_better else "✗"
            t.add_row(result["scenario"], metric, f"{now:g}", f"{then:g}", f"{ratio:.2f}", mark)
    return t
