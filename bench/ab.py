"""Before/after of a change in one run: ``pingpost bench`` alternated between two checkouts.

Each checkout runs with its own ``.venv`` (``make setup`` in it), so each measures its own
code; the rounds alternate which goes first, since on a shared machine the order of runs
moves the figures as much as a small change does. Prints, per scenario and side, the
median (min–max) of pings/s, exchange CPU per ping and p99 latency, and the ratio
after/before of the medians::

    python bench/ab.py BEFORE_DIR AFTER_DIR --rounds 3 -- --scenario 5-http --duration 8 --concurrency 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = (("pings_per_s", ",.0f"), ("cpu_us_per_ping", ",.0f"), ("latency_p99_ms", ".1f"),
           ("overhead_p99_ms", ".1f"), ("exchange_cpu", ".2f"))


def run(checkout: Path, bench_args: list[str], out: Path) -> list[dict[str, object]]:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pingpost.cli", "bench", *bench_args, "--json", str(out)],
                          cwd=checkout, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{checkout}: pingpost bench failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    results: list[dict[str, object]] = json.loads(out.read_text())["results"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="after --: pingpost bench's arguments")
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.bench_args = argv[cut + 1:]
    sides = {"before": args.before, "after": args.after}
    seen: dict[tuple[str, str], list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            order = list(sides) if number % 2 == 0 else list(sides)[::-1]
            for side in order:
                for result in run(sides[side], args.bench_args, Path(tmp) / f"{side}-{number}.json"):
                    seen.setdefault((str(result["scenario"]), side), []).append(result)
                    print(f"round {number + 1} {side:6} {result['scenario']}: {result['pings_per_s']:,.0f} pings/s, "
                          f"{result['cpu_us_per_ping']} µs/ping", flush=True)
    for scenario in dict.fromkeys(name for name, _ in seen):
        print(f"\n{scenario} ({args.rounds} rounds, median (min–max))")
        medians = {}
        for side in sides:
            runs = seen[scenario, side]
            cells = []
            for key, fmt in FIGURES:
                values = [float(r[key]) for r in runs if r.get(key) is not None]  # type: ignore[arg-type]
                medians[side, key] = statistics.median(values)
                cells.append(f"{key} {format(medians[side, key], fmt)} "
                             f"({format(min(values), fmt)}–{format(max(values), fmt)})")
            print(f"  {side:6} " + "; ".join(cells))
        print("  after/before: " + "; ".join(f"{key} {medians['after', key] / medians['before', key]:.2f}"
                                             for key, _ in FIGURES if medians["before", key]))


if __name__ == "__main__":
    main()
