"""The dashboard over HTTP, as a browser sends it: sessions, CSRF, slowed sign-ins, headers,
and every page's scope, against the real exchange app and real buyer servers.

The browser itself (Chromium through Playwright) is in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import datetime
import re
import signal
import zoneinfo
from http.cookies import SimpleCookie

import pytest

from pingpost.server import reload
from pingpost.config import from_dict
from pingpost import reports
from pingpost.ui import sessions, signin
from tests.helpers_contract import ping_ok, sold_ping
from tests.helpers_process import Served
from tests.support.buyers import accept, bid, reject
from tests.support.clock import ManualClock
from tests.support.dashboard import API_KEYS, HASHER, USERS, overview_numbers, shown, with_users
from tests.support.exchange import OTHER_KEY, PING, base_config

PAGES = ("/ui/", "/ui/lookup", "/ui/purchases", "/ui/returns")


def config(buyers, **exchange):
    """c1 (buyer b1) and c2 (buyer b2) both bid; c2 buys."""
    buyers.script("c1", ping=bid(4), post=reject())
    buyers.script("c2", ping=bid(3), post=accept())
    return with_users(base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2"}, **exchange))


def set_cookies(answer) -> dict[str, SimpleCookie]:
    found = {}
    for header in answer.headers.getall("Set-Cookie", []):
        cookie = SimpleCookie()
        cookie.load(header)
        found.update({name: cookie for name in cookie})
    return found


# The numbers -----------------------------------------------------------------------------------


async def traffic(ex) -> None:
    """acme: three sold leads from source s1; other: two pings."""
    for _ in range(3):
        assert (await sold_ping(ex, ping={**PING, "source_id": "s1"}))[1]["status"] == "sold"
    await ping_ok(ex, key=OTHER_KEY)
    await ping_ok(ex, key=OTHER_KEY)


@pytest.mark.parametrize("name", list(USERS))
@pytest.mark.parametrize("chosen", ["", "tz=America/Los_Angeles&by=state", "tz=Asia/Kolkata&by=vertical&days=2"])
async def test_the_overview_shows_the_numbers_the_reports_api_gives(buyers, exchange, visit, name, chosen):
    """Today by default; or a range of days in another zone, by another dimension."""
    ex = await exchange(config(buyers))
    await traffic(ex)
    browser = await visit(ex.url)
    await browser.sign_in(name)
    query = dict(part.split("=") for part in chosen.split("&") if part)
    asked = ""
    if query:
        tz = zoneinfo.ZoneInfo(query["tz"])
        today = datetime.datetime.now(tz).date()
        start = today - datetime.timedelta(days=int(query.pop("days", "1")) - 1)
        asked = f"from={start}&to={today}&tz={query['tz']}"
    page = (await browser.get(f"/ui/?{asked}&by={query.get('by', '')}")).text
    tiles, by, columns, rows = overview_numbers(page)
    assert by == query.get("by", by)
    status, api = await ex.call("GET", f"/v1/reports?group_by={by}&{asked}", key=API_KEYS[name])
    assert status == 200
    assert tiles and set(tiles) <= set(api["totals"])
    assert {metric: shown(metric, api["totals"][metric]) for metric in tiles} == tiles
    assert set(columns) <= set(api["totals"]) and len(columns) >= 5
    expected = [[row[by] or "(none)", *(shown(m, row[m]) for m in columns)] for row in api["rows"]]
    assert rows == [*expected, ["Total", *(shown(m, api["totals"][m]) for m in columns)]]
    assert api["totals"]["pings"] > 0


# Signing in and out ------------------------------------------------------------------------


async def test_sign_in_opens_a_session_in_a_strict_http_only_cookie_and_sign_out_ends_it(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    assert (await browser.get("/ui/returns")).headers["Location"] == "/ui/login?next=%2Fui%2Freturns"
    signed = await browser.sign_in("olga")
    assert signed.status == 303 and signed.headers["Location"] == "/ui/"
    cookie = set_cookies(signed)["pp_session"]["pp_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui/"
    assert not cookie["secure"], "plain HTTP: a Secure cookie would never come back"
    token = browser.cookie("pp_session")
    assert token and len(token) >= 40
    assert (await browser.get("/ui/returns")).status == 200

    out = await browser.sign_out()
    assert out.status == 303 and out.headers["Location"] == "/ui/login"
    assert (await browser.get("/ui/returns")).status == 303
    stolen = await visit(ex.url)  # the old cookie is worth nothing once signed out, wherever it is sent from
    stolen.session.cookie_jar.update_cookies({"pp_session": token})
    assert (await stolen.get("/ui/returns")).status == 303


async def test_the_session_lives_in_the_store_under_a_hash_of_its_token(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    await browser.sign_in("sam")
    token = browser.cookie("pp_session")
    assert token is not None
    assert await ex.store.get_session(token) is None
    assert await ex.store.get_session(sessions._key(token)) is not None


async def test_with_workers_every_worker_knows_a_session_and_its_sign_out(buyers, visit, redis_server, tmp_path):
    """``--workers 2 --redis``: each request on a new connection, which the kernel hands to
    either worker; a session kept by one process alone would fail about half of them."""
    redis_server.flush()
    served = await Served.start(tmp_path, config(buyers), "--workers", "2", "--redis", redis_server.url)
    try:
        url = served.listening.removeprefix("listening on ")
        browser = await visit(url, new_connections=True)
        assert (await browser.sign_in("olga")).status == 303
        assert [(await browser.get("/ui/returns")).status for _ in range(30)] == [200] * 30
        assert (await browser.sign_out()).status == 303
        assert [(await browser.get("/ui/returns")).status for _ in range(30)] == [303] * 30
    finally:
        served.signal(signal.SIGTERM)
        assert await served.wait(20) == 0


async def test_the_cookie_is_secure_when_a_trusted_proxy_serves_https(buyers, exchange, visit):
    ex = await exchange(config(buyers, trusted_proxies=["127.0.0.1/32"]))
    browser = await visit(ex.url)
    form = await browser.get("/ui/login")
    async with browser.session.post(ex.url + "/ui/login", allow_redirects=False,
                                    data={"csrf": form.csrf, "name": "sam", "password": USERS["sam"][1]},
                                    headers={"X-Forwarded-Proto": "https", "Origin": ex.url}) as response:
        assert response.status == 303
        assert "Secure" in response.headers["Set-Cookie"]


async def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    wrong = await browser.sign_in("sam", "not-the-password")
    unknown = await browser.sign_in("nobody", "not-the-password")
    assert wrong.status == unknown.status == 401
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in unknown.text
    assert browser.cookie("pp_session") is None
    assert (await browser.sign_in("SAM", USERS["sam"][1])).status == 303, "names are matched in any case"


async def test_after_a_sign_in_the_form_goes_to_the_page_asked_for_and_never_elsewhere(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    for target, lands in (("/ui/returns", "/ui/returns"), ("https://evil.example/", "/ui/"), ("//evil.example", "/ui/"),
                          ("/v1/reports", "/ui/")):
        browser = await visit(ex.url)
        form = await browser.get("/ui/login?next=" + target.replace("/", "%2F").replace(":", "%3A"))
        answer = await browser.post("/ui/login", {"csrf": form.csrf, "name": "olga", "password": USERS["olga"][1],
                                                  "next": re.search(r'name="next" value="([^"]*)"', form.text)[1]})
        assert answer.headers["Location"] == lands


async def test_failed_sign_ins_are_slowed_per_user_and_per_address(buyers, exchange, visit):
    clock = ManualClock()
    ex = await exchange(config(buyers), clock=clock)
    browser = await visit(ex.url)
    for _ in range(signin.FREE_FAILURES):
        assert (await browser.sign_in("sam", "guess")).status == 401
    held = await browser.sign_in("sam")  # the right password is not even checked while it must wait
    assert held.status == 429 and held.headers["Retry-After"] == "1" and "Try again in 1 s" in held.text
    clock.advance(1)
    assert (await browser.sign_in("sam", "guess")).status == 401
    assert (await browser.sign_in("sam")).headers["Retry-After"] == "2", "each failure doubles the wait"
    clock.advance(2)
    assert (await browser.sign_in("sam")).status == 303, "then the right password signs in"

    # The address has its own count (6 failures, which the success did not clear): a name
    # that failed once is slowed all the same when it is tried from there.
    other = await visit(ex.url)
    assert (await other.sign_in("sue", "guess")).status == 401
    held = await other.sign_in("sue")
    assert held.status == 429 and held.headers["Retry-After"] == "4"
    clock.advance(signin.WINDOW_S + 1)
    assert (await other.sign_in("sue")).status == 303, "failures are forgotten after their window"


def test_the_wait_doubles_from_the_free_failures_up_to_its_cap() -> None:
    from pingpost.store.base import Failures
    at = 1000.0
    assert signin.wait_s([Failures(signin.FREE_FAILURES - 1, at)], at) == 0
    assert [signin.wait_s([Failures(n, at)], at) for n in range(5, 9)] == [1, 2, 4, 8]
    assert signin.wait_s([Failures(40, at)], at) == signin.MAX_WAIT_S
    assert signin.wait_s([Failures(7, at)], at + 3) == 1, "counted from the latest failure"
    assert signin.wait_s([Failures(6, at), Failures(8, at)], at) == 8, "the longest wait of user and address"


# Sessions end --------------------------------------------------------------------------------


async def test_a_session_ends_when_idle_and_at_its_lifetime_however_used(buyers, exchange, visit):
    clock = ManualClock()
    ex = await exchange(config(buyers), clock=clock)
    idle = await visit(ex.url)
    await idle.sign_in("olga")
    clock.advance(sessions.IDLE_S - 5)
    assert (await idle.get("/ui/returns")).status == 200, "used in time: renewed"
    clock.advance(sessions.IDLE_S - 5)
    assert (await idle.get("/ui/returns")).status == 200
    clock.advance(sessions.IDLE_S + 1)
    assert (await idle.get("/ui/returns")).status == 303, "idle too long"

    busy = await visit(ex.url)
    await busy.sign_in("olga")
    used = 0.0
    while used + 1800 < sessions.LIFETIME_S:
        clock.advance(1800)
        used += 1800
        assert (await busy.get("/ui/returns")).status == 200
    clock.advance(sessions.LIFETIME_S - used)
    assert (await busy.get("/ui/returns")).status == 303, "past its lifetime, however busy"


async def test_a_new_password_or_a_removed_user_ends_their_sessions(buyers, exchange, visit):
    raw = config(buyers)
    ex = await exchange(raw)
    sam, olga = await visit(ex.url), await visit(ex.url)
    await sam.sign_in("sam")
    await olga.sign_in("olga")
    changed = {**raw, "users": [dict(u) for u in raw["users"] if u["name"] != "bea"]}
    next(u for u in changed["users"] if u["name"] == "sam")["password_hash"] = HASHER.hash("a new password")
    assert await reload(ex.app, from_dict(changed))
    assert (await sam.get("/ui/")).status == 303
    assert (await olga.get("/ui/returns")).status == 200
    bea = await visit(ex.url)
    assert (await bea.sign_in("bea")).status == 401


# CSRF ----------------------------------------------------------------------------------------


async def test_a_form_without_its_token_or_from_another_site_is_refused(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    form = await browser.get("/ui/login")
    good = {"csrf": form.csrf, "name": "sam", "password": USERS["sam"][1]}
    for refused in ({**good, "csrf": ""}, {k: v for k, v in good.items() if k != "csrf"}, {**good, "csrf": "x" * 43}):
        answer = await browser.post("/ui/login", refused)
        assert answer.status == 403 and "This form cannot be sent" in answer.text
    assert (await browser.post("/ui/login", good, origin="https://evil.example")).status == 403
    fresh = await visit(ex.url)  # a token without the sign-in cookie it was issued with
    assert (await fresh.post("/ui/login", good)).status == 403
    assert browser.cookie("pp_session") is None and fresh.cookie("pp_session") is None

    assert (await browser.post("/ui/login", good)).status == 303
    page = await browser.get("/ui/lookup")
    assert (await browser.post("/ui/logout", {})).status == 403
    assert (await browser.post("/ui/logout", {"csrf": form.csrf})).status == 403, "the sign-in token is not the session's"
    assert (await browser.post("/ui/logout", {"csrf": page.csrf}, origin="https://evil.example")).status == 403
    assert (await browser.get("/ui/lookup")).status == 200, "still signed in"
    assert (await browser.post("/ui/logout", {"csrf": page.csrf}, origin=None)).status == 303


# Headers and files ---------------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    answers = [await browser.get("/ui/login"), await browser.get("/ui/nope"), await browser.get("/ui/returns"),
               await browser.get("/ui/static/dashboard.css")]
    await browser.sign_in("sam")
    answers += [await browser.get(path) for path in PAGES] + [await browser.post("/ui/logout", {})]
    for answer in answers:
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert answers[0].headers["Cache-Control"] == "no-store"


async def test_static_files_are_served_with_their_types_and_nothing_else(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    page = await browser.get("/ui/login")
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "javascript"), ("favicon.svg", "image/svg+xml")):
        link = re.search(rf'"(/ui/static/{re.escape(name)}\?v=[0-9a-f]+)"', page.text)
        assert link, name
        answer = await browser.get(link[1])
        assert answer.status == 200 and kind in answer.headers["Content-Type"]
        assert "immutable" in answer.headers["Cache-Control"]
    for missing in ("/ui/static/nope.js", "/ui/static/..%2Fpages.py", "/ui/static/"):
        assert (await browser.get(missing)).status == 404
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text


async def test_ui_without_its_slash_goes_to_the_dashboard(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    answer = await (await visit(ex.url)).get("/ui")
    assert answer.status == 308 and answer.headers["Location"] == "/ui/"


# Roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "allowed"), [
    ("olga", {"/ui/", "/ui/lookup", "/ui/purchases", "/ui/returns"}),
    ("sam", {"/ui/", "/ui/lookup"}),
    ("bea", {"/ui/", "/ui/lookup", "/ui/purchases"}),
])
async def test_each_role_gets_its_pages_and_a_403_for_the_others(buyers, exchange, visit, name, allowed):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    await browser.sign_in(name)
    for path in PAGES:
        answer = await browser.get(path)
        assert answer.status == (200 if path in allowed else 403), path
        if path in allowed:
            menu = set(re.findall(r'<nav aria-label="Dashboard">(.*?)</nav>', answer.text, re.S)[0].split('href="')[1:])
            assert {item.split('"')[0] for item in menu} == allowed


async def test_lookup_shows_a_trace_only_within_the_visitors_scope(buyers, exchange, visit):
    """A ping as its trace endpoint shows it to the visitor; a lead by its lead_id only to
    those whose view of its ping names it (its seller, the operator, the buyer that bought)."""
    ex = await exchange(config(buyers))
    mine, sale = await sold_ping(ex)
    theirs = await ping_ok(ex, key=OTHER_KEY)
    assert sale["status"] == "sold"
    found = {}
    for name in ("olga", "sam", "sue", "bea", "bob"):
        browser = await visit(ex.url)
        await browser.sign_in(name)
        found[name] = {what: (await browser.get(f"/ui/lookup?id={value}")) for what, value in (
            ("ping", mine["ping_id"]), ("lead", sale["lead_id"]), ("other", theirs["ping_id"]))}
    # Both buyers' campaigns were pinged with both sellers' pings; only b2 bought.
    for name, sees in (("olga", {"ping", "lead", "other"}), ("sam", {"ping", "lead"}), ("sue", {"other"}),
                       ("bea", {"ping", "other"}), ("bob", {"ping", "lead", "other"})):
        for what, answer in found[name].items():
            assert answer.status == (200 if what in sees else 404), (name, what)
            if what not in sees:
                assert "Nothing found for" in answer.text and ">c1<" not in answer.text
    bought = found["bob"]["lead"].text
    assert sale["lead_id"] in bought and "$3.00" in bought and ">c1<" not in bought, "b2 sees its own campaign only"
    not_bought = found["bea"]["ping"].text
    assert ">c1<" in not_bought and ">c2<" not in not_bought and sale["lead_id"] not in not_bought
    seller = found["sam"]["lead"].text
    assert ">c1<" in seller and ">c2<" in seller and sale["lead_id"] in seller


async def test_purchases_are_the_buyers_own(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    sales = [(await sold_ping(ex))[1] for _ in range(3)]
    assert all(s["status"] == "sold" for s in sales)
    pages = {}
    for name in ("olga", "bea", "bob"):
        browser = await visit(ex.url)
        await browser.sign_in(name)
        pages[name] = (await browser.get("/ui/purchases")).text
    for each in sales:
        assert each["lead_id"] in pages["bob"] and each["lead_id"] in pages["olga"]
        assert each["lead_id"] not in pages["bea"]
    assert "3 leads, $9.00 in all." in pages["bob"] and "3 leads, $9.00 in all." in pages["olga"]
    assert "No purchases from" in pages["bea"]
    assert ">b2<" in pages["olga"] and ">b2<" not in pages["bob"], "the operator's list names the buyer"


async def test_a_bad_range_says_so_and_shows_today(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    browser = await visit(ex.url)
    await browser.sign_in("bea")
    for query, problem in (("from=2024-13-01", "from: must be a date written YYYY-MM-DD"),
                           ("tz=Mars/Olympus", "tz: must be a time zone name"),
                           ("from=2024-02-02&to=2024-02-01", "to: must not be before from"),
                           ("from=2020-01-01&to=2024-01-01", f"the range must be at most {reports.MAX_DAYS} days")):
        answer = await browser.get(f"/ui/purchases?{query}")
        assert answer.status == 200 and problem in answer.text, query
