"""Returns in a real browser (Debian's Chromium through Playwright, as in
tests/test_dashboard_browser.py): a buyer returns leads from its purchases page, an operator
approves one and denies another from the queue; every click lands on the page the API then
agrees with, with no console error and no page wider than a phone. Screenshots of both pages
go where the other browser tests put theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Browser

from tests.support.clock import ManualClock
from tests.support.dashboard import API_KEYS
from tests.test_dashboard_browser import WIDTHS, chromium, shots, tab  # noqa: F401
from tests.test_dashboard_returns import config, sell


async def test_a_buyer_returns_leads_and_an_operator_decides_them_in_the_browser(
        buyers: Any, exchange: Any, chromium: Browser, shots: Path) -> None:  # noqa: F811
    clock = ManualClock()
    ex = await exchange(config(buyers), clock=clock)
    leads = [await sell(ex) for _ in range(3)]
    for width in WIDTHS:
        bea = await tab(chromium, ex.url, width)
        await bea.sign_in("bea")
        assert await bea.goto("/ui/purchases") == 200
        await bea.shot(shots, f"purchases-returnable-buyer-{width}")
        assert await bea.fits()
        await bea.page.context.close()

    bea = await tab(chromium, ex.url)
    await bea.sign_in("bea")
    await bea.goto("/ui/purchases")
    for lead_id, reason in ((leads[0], "duplicate"), (leads[1], "fraud")):
        row = bea.page.locator(f"tr[data-lead='{lead_id}']")
        await row.locator("select[name=reason]").select_option(reason)
        async with bea.page.expect_navigation():
            await row.locator("button[type=submit]").click()
        assert "waits for the exchange's decision" in await bea.page.inner_text("p[role=status]")
        assert await row.locator("[data-state]").get_attribute("data-state") == "pending"
        assert await row.locator("form").count() == 0
    assert await bea.page.locator(f"tr[data-lead='{leads[2]}'] form").count() == 1
    assert bea.errors == []

    status, filed = await ex.call("GET", "/v1/returns?status=pending", key=API_KEYS["olga"])
    assert status == 200 and {(r["lead_id"], r["reason"]) for r in filed["returns"]} == {
        (leads[0], "duplicate"), (leads[1], "fraud")}
    ids = {r["lead_id"]: r["return_id"] for r in filed["returns"]}

    for width in WIDTHS:
        olga = await tab(chromium, ex.url, width)
        await olga.sign_in("olga")
        assert await olga.goto("/ui/returns") == 200
        assert await olga.fits()
        await olga.shot(shots, f"returns-queue-operator-{width}")
        await olga.page.context.close()

    olga = await tab(chromium, ex.url)
    await olga.sign_in("olga")
    await olga.goto("/ui/returns")
    async with olga.page.expect_navigation():
        await olga.page.locator(f"tr[data-return='{ids[leads[0]]}'] button", has_text="Approve").click()
    assert await olga.page.inner_text("p[role=status]") == "Return approved: the buyer is credited."
    denied = olga.page.locator(f"tr[data-return='{ids[leads[1]]}']")
    await denied.locator("input[name=note]").fill("the number works")
    async with olga.page.expect_navigation():
        await denied.locator("button", has_text="Deny").click()
    assert "No returns are waiting." in await olga.page.inner_text("main")
    assert olga.errors == []

    listed = {r["lead_id"]: r for r in (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"]}
    assert (listed[leads[0]]["status"], listed[leads[0]]["decided_by"]) == ("approved", "olga")
    assert (listed[leads[1]]["status"], listed[leads[1]]["decision_note"]) == ("denied", "the number works")
    status, report = await ex.call("GET", "/v1/reports", key=API_KEYS["bea"])
    assert (report["totals"]["returns"], report["totals"]["spend"]) == (1, 8.0)
    await bea.goto("/ui/purchases")
    states = [await bea.page.locator(f"tr[data-lead='{lead_id}'] [data-state]").get_attribute("data-state")
              for lead_id in leads]
    assert states == ["returned", "denied", "sold"]
    assert bea.errors == []
