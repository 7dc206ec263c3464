"""The dashboard in a real browser: Debian's Chromium (/usr/bin/chromium, which
scripts/ensure-chromium installs for ``make test``) driven by Playwright, against the real
exchange app and real buyer servers.

Every page is checked for console errors (a script or style the Content-Security-Policy
refused shows as one) and for a page wider than the screen at phone width. Screenshots of
every page at 1280 px and at phone width are saved to ``$PINGPOST_SCREENSHOTS`` (the
docs' pictures: ``PINGPOST_SCREENSHOTS=docs/screenshots``), else to the test's own folder.
"""

from __future__ import annotations

import datetime
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tests.helpers_contract import ping_ok, sold_ping
from tests.support.buyers import Reply, accept, bid, reject
from tests.support.clock import ManualClock
from tests.support.dashboard import API_KEYS, USERS, overview_numbers, shown, with_users
from tests.support.exchange import LEAD, OTHER_KEY, PING, base_config

CHROMIUM = "/usr/bin/chromium"
WIDTHS = {"1280": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}
SHOT_HEIGHT = 1800


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium (make test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        await browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PINGPOST_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Tab:
    """One page of one browser context, with every console error and page error it logged."""

    page: Page
    url: str
    errors: list[str] = field(default_factory=list)

    async def goto(self, path: str) -> int:
        response = await self.page.goto(self.url + path)
        assert response is not None
        return response.status

    async def sign_in(self, name: str, password: str | None = None) -> None:
        await self.goto("/ui/login")
        await self.page.fill("input[name=name]", name)
        await self.page.fill("input[name=password]", USERS[name][1] if password is None else password)
        async with self.page.expect_navigation():
            await self.page.click("button[type=submit]")

    async def fits(self) -> bool:
        """No wider than the window: nothing to scroll sideways but the tables' own boxes."""
        return bool(await self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))

    async def shot(self, folder: Path, name: str) -> Path:
        """The whole page, down to ``SHOT_HEIGHT`` at most (a long list's first screens)."""
        path = folder / f"{name}.png"
        height = min(int(await self.page.evaluate("document.documentElement.scrollHeight")), SHOT_HEIGHT)
        await self.page.screenshot(path=str(path), full_page=True,
                                   clip={"x": 0, "y": 0, "width": self.page.viewport_size["width"], "height": height})
        return path


async def tab(browser: Browser, url: str, width: str = "1280") -> Tab:
    context = await browser.new_context(viewport=WIDTHS[width])
    page = await context.new_page()
    opened = Tab(page, url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    return opened


def png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int(struct.unpack(">I", header[16:20])[0])


def config(buyers: Any) -> dict[str, Any]:
    buyers.script("c1", ping=bid(4), post=reject())
    buyers.script("c2", ping=bid(3), post=accept())
    return with_users(base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}))


def busy_config(buyers: Any) -> dict[str, Any]:
    """c1 (b1) bids by the lead's quality and buys every other post it is offered; c2 (b2)
    bids 3.50 and buys the rest; acme keeps 80% of a sale."""
    offered = {"c1": 0}

    def c1_post(body: dict[str, Any]) -> Reply:
        offered["c1"] += 1
        return accept() if offered["c1"] % 2 else reject()

    buyers.script("c1", ping=lambda body: bid(round(body.get("quality_score", 50) / 12, 2)), post=c1_post)
    buyers.script("c2", ping=bid(3.5), post=accept())
    config = with_users(base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}))
    config["sellers"][0]["revenue_share"] = 0.8
    return config


async def busy_day(ex: Any, clock: ManualClock) -> None:
    """A day of traffic from 00:10 to 23:10 on the clock's day (UTC): acme from three sources
    and two states, more of it in the afternoon, every priced ping posted; other a few pings."""
    day = datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc).replace(hour=0, minute=10, second=0)
    clock.now = day.timestamp()
    for hour in range(24):
        for n in range(1 + (hour * 7) % 4 + (3 if 13 <= hour <= 18 else 0)):
            body = {**PING, "source_id": f"s{1 + n % 3}", "state": ("CA", "TX")[n % 2],
                    "quality_score": 40 + (hour * 11 + n * 17) % 60}
            answer = await ping_ok(ex, body)
            if answer["status"] == "bid":
                status, _ = await ex.post(answer["ping_id"], LEAD)
                assert status == 200
        if hour % 5 == 0:
            await ping_ok(ex, key=OTHER_KEY)
        clock.advance(3600)
    clock.now = day.timestamp() + 23.5 * 3600


# Every role, every page --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["olga", "sam", "bob"])
async def test_each_role_signs_in_sees_the_apis_numbers_looks_up_a_lead_and_signs_out_without_a_console_error(
        buyers, exchange, chromium, shots, name):
    clock = ManualClock()
    ex = await exchange(busy_config(buyers), clock=clock)
    await busy_day(ex, clock)
    _, sale = await sold_ping(ex, ping={**PING, "quality_score": 30})  # c1 bids 2.50: c2 (b2) ranks first and buys
    role = USERS[name][0].partition(":")[0]
    for width in WIDTHS:
        browser = await tab(chromium, ex.url, width)
        assert await browser.goto("/ui/") == 200  # the sign-in page, after a redirect
        assert browser.page.url.startswith(ex.url + "/ui/login")
        await browser.shot(shots, f"login-{width}")
        await browser.sign_in(name)
        assert browser.page.url == ex.url + "/ui/"

        tiles, by, columns, rows = overview_numbers(await browser.page.content())
        status, api = await ex.call("GET", f"/v1/reports?group_by={by}", key=API_KEYS[name])
        assert status == 200 and api["totals"]["sold"] > 10
        assert tiles == {metric: shown(metric, api["totals"][metric]) for metric in tiles}
        assert rows[-1] == ["Total", *(shown(m, api["totals"][m]) for m in columns)]
        bars = await browser.page.eval_on_selector_all(
            "figure[data-chart=sold] rect.bar title", "titles => titles.map(t => t.textContent)")
        assert len(bars) == 24, "a bar per hour of the day"
        assert sum(int(text.rsplit(": ", 1)[1].split()[0]) for text in bars) == api["totals"]["sold"], "the chart adds up"
        pages = [link for link in await browser.page.eval_on_selector_all(
            "nav[aria-label=Dashboard] a", "links => links.map(a => a.getAttribute('href'))")]
        for path in pages:
            assert await browser.goto(path) == 200, path
            assert await browser.fits(), (path, width)
            page_name = path.strip("/").removeprefix("ui").strip("/") or "overview"
            assert png_width(await browser.shot(shots, f"{page_name}-{role}-{width}")) == WIDTHS[width]["width"]

        await browser.goto("/ui/lookup")
        await browser.page.fill("input[name=id]", sale["lead_id"])
        async with browser.page.expect_navigation():
            await browser.page.click("form.filters button[type=submit]")
        assert sale["lead_id"] in await browser.page.inner_text("section.trace")
        await browser.shot(shots, f"lookup-found-{role}-{width}")

        async with browser.page.expect_navigation():
            await browser.page.click("form.signout button")
        assert browser.page.url == ex.url + "/ui/login"
        assert await browser.goto("/ui/lookup") == 200 and browser.page.url.startswith(ex.url + "/ui/login")
        assert browser.errors == []
        await browser.page.context.close()


async def test_a_form_on_its_way_shows_the_loading_state_and_an_empty_range_says_what_to_do(buyers, exchange, chromium):
    ex = await exchange(config(buyers))
    browser = await tab(chromium, ex.url)
    await browser.sign_in("bob")
    empty = await browser.page.inner_text("main")
    assert "No traffic from" in empty and "check that your campaigns are active" in empty
    assert "no traffic in this range" in await browser.page.inner_text("figure[data-chart=pings]")
    # The form is sent nowhere (a listener after the page's own cancels it): what the page
    # shows while an answer is on its way stays to be read.
    await browser.page.evaluate("window.addEventListener('submit', event => event.preventDefault())")
    await browser.page.click("form.filters button[type=submit]")
    state = await browser.page.evaluate(
        "[document.body.classList.contains('loading'), document.querySelector('form.filters button').textContent, "
        "document.querySelector('form.filters').getAttribute('aria-busy')]")
    assert state == [True, "Loading…", "true"]
    await browser.goto("/ui/")
    assert not await browser.page.evaluate("document.body.classList.contains('loading')"), "the new page is not loading"
    assert browser.errors == []


async def test_a_form_without_its_token_or_from_another_site_is_refused_in_the_browser(buyers, exchange, chromium):
    ex = await exchange(config(buyers))
    browser = await tab(chromium, ex.url)
    await browser.goto("/ui/login")
    await browser.page.eval_on_selector("input[name=csrf]", "input => input.remove()")
    await browser.page.fill("input[name=name]", "sam")
    await browser.page.fill("input[name=password]", USERS["sam"][1])
    async with browser.page.expect_navigation() as navigation:
        await browser.page.click("button[type=submit]")
    refused = await navigation.value
    assert refused is not None and refused.status == 403
    assert "This form cannot be sent" in await browser.page.inner_text("main")

    await browser.sign_in("sam")
    assert browser.page.url == ex.url + "/ui/"
    # Another site (another origin: another port) posts a sign-out form at the dashboard.
    evil = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f'<form method="post" action="{ex.url}/ui/logout"><input name="csrf" value="guess">'
            '<button type="submit">win a prize</button></form>'))

    evil.router.add_get("/", page)
    runner = web.AppRunner(evil)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        other = await browser.page.context.new_page()
        await other.goto(f"http://127.0.0.1:{port}/")
        async with other.expect_navigation() as navigation:
            await other.click("button")
        answer = await navigation.value
        assert answer is not None and answer.status == 403
    finally:
        await runner.cleanup()
    assert await browser.goto("/ui/lookup") == 200 and browser.page.url == ex.url + "/ui/lookup", "still signed in"


async def test_another_roles_page_and_another_tenants_record_are_refused(buyers, exchange, chromium):
    ex = await exchange(config(buyers))
    theirs = await ping_ok(ex, key=OTHER_KEY)
    browser = await tab(chromium, ex.url)
    await browser.sign_in("sam")
    refused = [("/ui/returns", 403), ("/ui/purchases", 403), (f"/ui/lookup?id={theirs['ping_id']}", 404)]
    for path, status in refused:
        assert await browser.goto(path) == status, path
        assert ("Not for your role" if status == 403 else "Nothing found for") in await browser.page.inner_text("main")
    # The browser reports each refused page's status, and nothing else: no script or style failed.
    assert browser.errors == [f"Failed to load resource: the server responded with a status of {status} "
                              f"({'Forbidden' if status == 403 else 'Not Found'}) ({ex.url}{path})"
                              for path, status in refused]
