"""What the books cost the exchange: `pingpost bench` with and without them, in one run
(docs/performance.md, "What the books cost a ping").

Run: ``.venv/bin/python bench/ledger_exchange.py [--scenario ping-post] [--rounds 3] [--duration 8]
[--backends none,sqlite,postgresql] [--baseline DIR]``. Each round runs ``pingpost bench`` once per
backend, in turn (none, sqlite, postgresql, then again), so a change in the machine's load falls
on every backend alike, and the ratios are read within the run. ``postgresql`` is a server of its
own, started like the tests' but with fsync on; its journal lives in the bench's work dir. Prints
the median and (min-max) of pings/s and p99 per backend, and each one's ratio to ``none``.

``--baseline DIR``: another checkout of pingpost with its own ``.venv`` (``make setup`` there),
say the commit before a change to the books. Each round then also runs the baseline's
``pingpost bench`` right after this checkout's, per backend except ``none``; its rows are marked
``@baseline`` and the last two columns compare this checkout with it, backend by backend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pg_support import PostgresServer  # noqa: E402

METRICS = ("pings_per_s", "posts_per_s", "latency_p50_ms", "latency_p99_ms", "cpu_us_per_ping")


def bench(scenario: str, duration: float, ledger: str, out: Path, python: str = sys.executable) -> dict[str, Any]:
    subprocess.run([python, "-m", "pingpost.cli", "bench", "--scenario", scenario, "--duration", str(duration),
                    "--ledger", ledger, "--exchange-log-level", "warning", "--json", str(out)],
                   check=True, capture_output=True, cwd=out.parent)
    result: dict[str, Any] = json.loads(out.read_text())["results"][0]
    return result


def median(results: list[dict[str, Any]], metric: str) -> float:
    return statistics.median(r[metric] for r in results)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="ping-post")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--backends", default="none,sqlite,postgresql")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout with its own .venv, run after this one in every round")
    args = parser.parse_args()
    backends = args.backends.split(",")
    pythons = {"": sys.executable}
    if args.baseline is not None:
        pythons["@baseline"] = str(args.baseline.resolve() / ".venv" / "bin" / "python")
    server = PostgresServer(durable=True).start() if "postgresql" in backends else None
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="pingpost-ledger-bench-") as tmp:
            for round_ in range(args.rounds):
                for backend in backends:
                    for mark, python in pythons.items():
                        if mark and backend == "none":
                            continue
                        # A database of its own per run, so that no run reads another's rows.
                        url = server.create_database(f"r{round_}_{len(runs)}{mark.strip('@')}") \
                            if backend == "postgresql" and server is not None else backend
                        name = backend + mark
                        out = Path(tmp) / f"{name}-{round_}.json"
                        runs.setdefault(name, []).append(bench(args.scenario, args.duration, url, out, python))
                        last = runs[name][-1]
                        print(f"round {round_ + 1} {name}: {last['pings_per_s']:,.0f} pings/s, "
                              f"p99 {last['latency_p99_ms']:.1f} ms, errors {last['errors']}", flush=True)
    finally:
        if server is not None:
            server.remove()
    print(f"\n{args.scenario}, {args.rounds} rounds of {args.duration:g} s; median (min-max)")
    against = "baseline" if args.baseline is not None else "none"
    print("| books | " + " | ".join(METRICS) + f" | pings/s vs {against} | p99 vs {against} |")
    print("|---" * (len(METRICS) + 3) + "|")
    for name, results in runs.items():
        cells = [spread([r[m] for r in results]) for m in METRICS]
        base = runs.get(f"{name}@baseline" if args.baseline is not None else "none")
        ratios = ["", ""]
        if base is not None and base is not results:
            ratios = [f"{median(results, m) / median(base, m):.2f}x" for m in ("pings_per_s", "latency_p99_ms")]
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
