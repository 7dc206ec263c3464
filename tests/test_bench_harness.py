"""``pingpost bench`` end to end, small: it runs, writes the documented JSON, compares.

Not a speed test: it only checks that the harness measures something and reports it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: keys docs/performance.md documents for every result
RESULT_KEYS = {
    "scenario", "mode", "workers", "store", "runs", "pings", "pings_per_s", "posts_per_s",
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms",
    "overhead_p50_ms", "overhead_p95_ms", "overhead_p99_ms", "overhead_max_ms",
    "auction_p50_ms", "auction_p99_ms", "errors", "error_kinds", "cpu_us_per_ping", "pings_per_core_s",
    "exchange_cpu", "loadgen_cpu", "buyers_cpu", "rss_mb", "spread",
}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pingpost.cli", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_bench_writes_json_and_compares(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = bench("--scenario", "5-http", "--duration", "2", "--warmup", "0.5", "--concurrency", "16",
                 "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["pingpost_bench"] == 1
    assert {"nproc", "cpu_model", "python"} <= report["machine"].keys()
    assert report["settings"]["mode"] == "closed"
    [result] = report["results"]
    assert RESULT_KEYS <= result.keys(), RESULT_KEYS - result.keys()
    assert result["scenario"] == "5-http"
    assert result["pings"] > 0 and result["pings_per_s"] > 0
    assert result["latency_p50_ms"] >= 10  # the buyers answer in 10 ms
    assert result["cpu_us_per_ping"] > 0 and result["rss_mb"] > 0
    assert "pings/s" in done.stdout

    again = bench("--scenario", "5-http", "--mode", "open", "--rate", "200", "--duration", "1", "--warmup", "0",
                  "--compare", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ratios" in again.stdout and "(not in the earlier file)" in again.stdout  # open vs closed

    closed = bench("--scenario", "5-http", "--duration", "1", "--warmup", "0", "--concurrency", "8",
                   "--compare", str(out))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "pings_per_s" in closed.stdout and "ratio" in closed.stdout


def test_bench_refuses_bad_options() -> None:
    done = bench("--workers", "2", "--store", "memory")
    assert done.returncode == 2 and "--store redis" in done.stderr
    done = bench("--cpus", "zero")
    assert done.returncode == 2


def test_bench_baseline_prints_both_ratios(tmp_path: Path) -> None:
    out = tmp_path / "ratios.json"
    done = bench("--baseline", "--floor", "--repeat", "1", "--duration", "0.5", "--warmup", "0", "--concurrency", "8",
                 "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())["baseline"]
    assert set(figures["ratios"]) == {"5-http", "10k-campaigns"}
    for scenario in figures["ratios"].values():
        for exchange in ("pingpost", "plain", "floor"):
            assert scenario[f"{exchange}_pings_per_s"]["median"] > 0, exchange
        assert scenario["ratio"]["median"] > 0 and scenario["floor_ratio"]["median"] > 0
        assert scenario["errors"] == {"pingpost": 0, "plain": 0, "floor": 0}
    assert figures["open_loop"]["rate"] > 0 and figures["open_loop"]["overhead_p99_ms"]["median"] is not None
    assert "floor ratio" in done.stdout and "p99 overhead" in done.stdout
