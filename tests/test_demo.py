"""``pingpost demo`` end to end: real child processes, real HTTP, exit codes checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from pingpost import demo


def test_demo_sells_and_exits_cleanly() -> None:
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", "demo", "--pings", "200", "--seed", "3"],
                          capture_output=True, text=True, timeout=90, env={**os.environ, "COLUMNS": "120"})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    sold = re.search(r"│ sold\s+│\s+(\d+) │", out)
    assert sold and int(sold.group(1)) > 0, out
    assert re.search(r"│ failed calls\s+│\s+0 │", out), out
    for buyer in ("safeauto", "flakyleads", "pickyins"):
        assert re.search(rf"│ {buyer}\s+│\s+[1-9]", out), out  # pinged at least once


def test_campaign_counts_read_prometheus_text() -> None:
    text = (
        '# HELP pingpost_campaign_pings_total Buyer pings\n'
        'pingpost_campaign_pings_total{campaign="c1",outcome="bid"} 3.0\n'
        'pingpost_campaign_pings_total{campaign="c1",outcome="timeout"} 2.0\n'
        'pingpost_posts_total{campaign="c1",outcome="accepted"} 1.0\n'
        'pingpost_posts_created{campaign="c1",outcome="accepted"} 1.7e9\n'
        'pingpost_auction_seconds_bucket{le="0.1"} 4.0\n'
    )
    counts = demo.campaign_counts(text)
    assert dict(counts["c1"]) == {"ping:bid": 3, "ping:timeout": 2, "post:accepted": 1}
