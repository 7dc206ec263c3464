"""What a million opt-outs cost the ping path: `pingpost bench` on books holding none and on
books holding 1,000,000, in one run (docs/performance.md, "Privacy: the opt-out check and
sealing a lead").

Run: ``.venv/bin/python bench/suppression_exchange.py [--scenario 5-http] [--rounds 3]
[--duration 8] [--entries 1000000]``. Two SQLite books are made first, with the operator key
of ``PINGPOST_DATA_KEY`` (a new one when unset): one with an empty opt-out list, one with
``--entries`` random keyed hashes on it, none of a consumer the simulator sends, so every check
is a miss, as nearly all are in production. Each round copies each into a fresh file and runs
``pingpost bench --ledger sqlite:///COPY`` on it, alternating (empty, full, empty, ...), so a
change in the machine's load falls on both alike. The simulator's pings carry both hashes 70%
of the time: those pay two keyed hashes and two set lookups; the rest a truth test. It also
times reading the whole list into a worker's view (what a worker does at start) and the
view's memory (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ledger_exchange import bench, median, spread  # noqa: E402
from pingpost import ledger  # noqa: E402
from pingpost.privacy import keys  # noqa: E402
from pingpost.privacy.suppression import Suppression  # noqa: E402

METRICS = ("pings_per_s", "latency_p50_ms", "latency_p99_ms", "cpu_us_per_ping", "rss_mb")


async def make_books(path: Path, key: keys.OperatorKey, entries: int) -> None:
    books = await ledger.open(f"sqlite:///{path}", key=key)
    await books.close()
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO suppressions (hash, added_at) VALUES (?, ?)",
                         ((os.urandom(16), 0.0) for _ in range(entries)))


async def read_view(path: Path, key: keys.OperatorKey) -> tuple[int, float, float]:
    """(entries, seconds, MB): the whole list read into a view, as a worker does at start."""
    books = await ledger.open(f"sqlite:///{path}", key=key)
    try:
        assert books.vault is not None
        view = Suppression(books.vault.identifiers)
        tracemalloc.start()
        started = time.perf_counter()
        await view.catch_up(books)
        seconds = time.perf_counter() - started
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return len(view), seconds, held / 1e6
    finally:
        await books.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="5-http")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ.setdefault(keys.KEY_ENV, keys.generate())
    key = keys.required(keys.load(None))
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="pingpost-suppression-bench-") as tmp:
        made = {"none": Path(tmp) / "none.db", f"{args.entries:,}": Path(tmp) / "full.db"}
        for path, entries in zip(made.values(), (0, args.entries)):
            asyncio.run(make_books(path, key, entries))
        held, seconds, mb = asyncio.run(read_view(made[f"{args.entries:,}"], key))
        print(f"reading {held:,} opt-outs into a view: {seconds:.2f} s, {mb:.1f} MB", flush=True)
        for round_ in range(args.rounds):
            for name, path in made.items():
                run = Path(tmp) / f"run-{round_}-{path.stem}"
                run.mkdir()
                shutil.copy(path, run / "books.db")
                result = bench(args.scenario, args.duration, f"sqlite:///{run / 'books.db'}", run / "out.json")
                runs.setdefault(name, []).append(result)
                print(f"round {round_ + 1}, {name} opt-outs: {result['pings_per_s']:,.0f} pings/s, "
                      f"p99 {result['latency_p99_ms']:.1f} ms, {result['cpu_us_per_ping']:.0f} µs CPU/ping, "
                      f"errors {result['errors']}", flush=True)
                shutil.rmtree(run)
    print(f"\n{args.scenario}, {args.rounds} rounds of {args.duration:g} s; median (min-max)")
    print("| opt-outs | " + " | ".join(METRICS) + " | pings/s vs none | CPU/ping vs none |")
    print("|---" * (len(METRICS) + 3) + "|")
    base = runs["none"]
    for name, results in runs.items():
        ratios = ["", ""] if results is base else [
            f"{median(results, m) / median(base, m):.3f}x" for m in ("pings_per_s", "cpu_us_per_ping")]
        print(f"| {name} | " + " | ".join(spread([r[m] for r in results]) for m in METRICS) + " | "
              + " | ".join(ratios) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
