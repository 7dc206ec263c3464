"""``pingpost bench --baseline``: pingpost's throughput as a ratio of a plain exchange's.

The machine is shared and noisy, so absolute pings/s move between runs; a ratio taken
within one round (the two exchanges run back to back, on the same layout, against the
same buyers and load) cancels most of that. Each round runs both exchanges in every
scenario, alternating which goes first; the ratio of a round is pingpost's pings/s over
the plain exchange's, and the figure reported is the median over the rounds with its
spread. Then the open loop: pingpost alone in 5-http at half its median closed-loop
capacity, for the p99 overhead a seller sees when the exchange is not saturated.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path
from typing import Any

import msgspec

from . import run_scenario
from .cpus import Layout
from .processes import BenchError
from .report import summarize
from .scenarios import SCENARIOS

#: the open loop's scenario, at half of pingpost's closed-loop capacity in it
OPEN_SCENARIO = "5-http"


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def exchanges_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The exchanges a round runs: pingpost and the plain one, and the floor with ``--floor``."""
    return ("pingpost", "plain", "floor") if args.floor else ("pingpost", "plain")


def measure(scenarios: list[str], args: argparse.Namespace, layout: Layout, console: Any,
            report: dict[str, Any]) -> int:
    exchanges = exchanges_of(args)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(n, e): [] for n in scenarios for e in exchanges}
    for number in range(args.repeat):
        order = exchanges if number % 2 == 0 else exchanges[::-1]
        for name in scenarios:
            for exchange in order:
                console.print(f"[dim]round {number + 1}/{args.repeat}: {name}, {exchange} "
                              f"({args.concurrency} in flight, {args.duration:g} s) ...[/]")
                try:
                    runs[name, exchange].append(run_scenario(SCENARIOS[name], args, layout, exchange))
                except BenchError as exc:
                    console.print(f"[red]{name}, {exchange}: {exc}[/]")
                    return 1
    figures: dict[str, Any] = {}
    for name in scenarios:
        plain = runs[name, "plain"]
        figures[name] = {"errors": {e: sum(r["errors"] for r in runs[name, e]) for e in exchanges}}
        for exchange in exchanges:
            figures[name][f"{exchange}_pings_per_s"] = _spread([r["pings_per_s"] for r in runs[name, exchange]])
            result = summarize(name, args, runs[name, exchange])
            result["exchange"] = exchange
            report["results"].append(result)
        for exchange in exchanges:
            if exchange == "plain":
                continue
            key = "ratio" if exchange == "pingpost" else f"{exchange}_ratio"
            each = _ratios(runs[name, exchange], plain)
            figures[name][key], figures[name][f"{key}_each_round"] = _spread(each), [round(x, 2) for x in each]
    open_result = None
    if OPEN_SCENARIO in scenarios:
        rate = figures[OPEN_SCENARIO]["pingpost_pings_per_s"]["median"] / 2
        opened = copy.copy(args)
        opened.mode, opened.rate = "open", rate
        open_runs = []
        for number in range(args.repeat):
            console.print(f"[dim]open loop {number + 1}/{args.repeat}: {OPEN_SCENARIO}, pingpost at {rate:,.0f}/s ...[/]")
            try:
                open_runs.append(run_scenario(SCENARIOS[OPEN_SCENARIO], opened, layout))
            except BenchError as exc:
                console.print(f"[red]open loop: {exc}[/]")
                return 1
        open_result = {"scenario": OPEN_SCENARIO, "rate": round(rate, 1),
                       "overhead_p99_ms": _spread([r["overhead_p99_ms"] for r in open_runs]),
                       "overhead_p50_ms": _spread([r["overhead_p50_ms"] for r in open_runs]),
                       "errors": sum(r["errors"] for r in open_runs)}
        report["results"].append(summarize(OPEN_SCENARIO, opened, open_runs))
    report["baseline"] = {"ratios": figures, "open_loop": open_result}
    console.print(table(figures, open_result, args))
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"wrote {args.json}")
    failed = any(f["errors"]["pingpost"] for f in figures.values()) or bool(open_result and open_result["errors"])
    return 1 if failed else 0


def _ratios(ours: list[dict[str, Any]], plain: list[dict[str, Any]]) -> list[float]:
    """Each round's pings/s over the plain exchange's in the same round."""
    return [a["pings_per_s"] / b["pings_per_s"] if b["pings_per_s"] else float("inf") for a, b in zip(ours, plain)]


def _cell(figure: dict[str, float], fmt: str) -> str:
    text = format(figure["median"], fmt)
    return text if figure["min"] == figure["max"] else f"{text} ({format(figure['min'], fmt)}–{format(figure['max'], fmt)})"


def table(figures: dict[str, Any], open_result: dict[str, Any] | None, args: argparse.Namespace) -> Any:
    from rich.table import Table

    t = Table(title=f"pingpost / plain exchange: median (min–max) of {args.repeat} alternating rounds, "
                    f"closed loop, {args.concurrency} in flight, {args.duration:g} s, {args.ledger} books",
              title_justify="left")
    floor = args.floor
    headers = ["scenario", "pingpost pings/s", "plain pings/s", "ratio"]
    headers += ["floor pings/s", "floor ratio", "errors (pingpost/plain/floor)"] if floor else ["errors (pingpost/plain)"]
    for header in headers:
        t.add_column(header, justify="left" if header == "scenario" else "right")
    for name, f in figures.items():
        row = [name, _cell(f["pingpost_pings_per_s"], ",.0f"), _cell(f["plain_pings_per_s"], ",.0f"),
               _cell(f["ratio"], ".2f") + "×"]
        if floor:
            row += [_cell(f["floor_pings_per_s"], ",.0f"), _cell(f["floor_ratio"], ".2f") + "×"]
        t.add_row(*row, "/".join(str(n) for n in f["errors"].values()))
    if open_result is not None:
        t.caption = (f"pingpost open loop, {open_result['scenario']} at {open_result['rate']:,.0f}/s (half its capacity): "
                     f"p99 overhead {_cell(open_result['overhead_p99_ms'], '.1f')} ms, "
                     f"p50 {_cell(open_result['overhead_p50_ms'], '.1f')} ms, {open_result['errors']} errors")
        t.caption_justify = "left"
    return t
