"""``pingpost demo`` end to end: real child processes, real HTTP, exit codes checked; the
dashboard it leaves up signed in to by each role it prints."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from pingpost import demo
from tests.helpers_demo import DASHBOARD, ENV, SIGN_IN, SOLD, start, until_up
from tests.support.dashboard import Visit, overview_numbers, shown


def test_demo_sells_and_exits_cleanly() -> None:
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", "demo", "--pings", "200", "--seed", "3", "--exit"],
                          capture_output=True, text=True, timeout=90, env=ENV)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    sold = SOLD.search(out)
    assert sold and int(sold.group(1)) > 0, out
    assert re.search(r"│ failed calls\s+│\s+0 │", out), out
    for buyer in ("safeauto", "flakyleads", "pickyins"):
        assert re.search(rf"│ {buyer}\s+│\s+[1-9]", out), out  # pinged at least once
    for buyer in ("jsonleads", "xmlleads"):  # buyers with APIs of their own: pinged and bidding
        assert re.search(rf"│ {buyer}\s+│\s+[1-9]\d*\s+│\s+[1-9]", out), out
    assert DASHBOARD.search(out), out
    assert [(role, name) for role, name, _ in SIGN_IN.findall(out)] == [(role, name) for name, role in demo.USERS], out
    assert "Ctrl-C" not in out


async def test_the_demo_stays_up_for_each_role_to_sign_in_until_ctrl_c() -> None:
    with start("--pings", "60", "--seed", "4") as process:
        assert process.stdout is not None
        try:
            out = until_up(process)
            found = DASHBOARD.search(out)
            assert found, out
            sign_ins = SIGN_IN.findall(out)
            assert len(sign_ins) == 3, out
            sold = SOLD.search(out)
            assert sold, out
            for role, name, password in sign_ins:
                browser = Visit(found.group(1))
                try:
                    assert (await browser.sign_in(name, password)).status == 303, role
                    tiles, _, _, _ = overview_numbers((await browser.get("/ui/")).text)
                    if role == "operator":  # every sale of the run, as the demo's own summary counted them
                        assert tiles["sold"] == f"{int(sold.group(1)):,}", (tiles, out)
                    if role == "seller:acme_media":  # the seller's API key answers the same report
                        async with browser.session.get(found.group(1) + "/v1/reports", headers={
                                "Authorization": "Bearer demo-acme-media-key"}) as response:
                            totals = (await response.json())["totals"]
                        assert tiles == {metric: shown(metric, totals[metric]) for metric in tiles}
                    assert int(tiles["pings"].replace(",", "")) > 0, (role, tiles)
                    assert (await browser.get("/ui/lookup")).status == 200, role
                    assert (await browser.sign_out()).status == 303, role
                finally:
                    await browser.close()
            process.send_signal(signal.SIGINT)
            assert process.wait(30) == 0, out + process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()


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
