"""The dashboard's returns over HTTP, as a browser sends its forms: a buyer's return buttons on
its purchases, the operators' queue with approve and deny, CSRF on every form, each role
kept to its own; and what the pages did, read back through the API.

The same in a real browser is in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from tests.helpers_contract import sold_ping
from tests.support.buyers import accept, bid
from tests.support.clock import ManualClock
from tests.support.dashboard import API_KEYS, with_users
from tests.support.exchange import PING, base_config

_RETURN_FORM = re.compile(r'<form class="inline" method="post" action="/ui/purchases/return".*?</form>', re.S)


def config(buyers: Any, **b1: Any) -> dict[str, Any]:
    """c1 (b1) buys auto leads at 4.00 and c2 (b2) home leads at 3.00; b1's returns wait for
    an operator unless ``b1`` says otherwise."""
    buyers.script("c1", ping=bid(4), post=accept())
    buyers.script("c2", ping=bid(3), post=accept())
    made = with_users(base_config(buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2", "vertical": "home"}))
    made["buyers"][0].update({"max_return_rate": 0, **b1})
    return made


async def sell(ex: Any, vertical: str = "auto") -> str:
    return str((await sold_ping(ex, ping={**PING, "vertical": vertical}))[1]["lead_id"])


def row(html: str, lead_id: str) -> str:
    found = re.search(rf'<tr data-lead="{lead_id}">.*?</tr>', html, re.S)
    assert found, html
    return found.group(0)


async def test_a_buyer_returns_a_purchase_from_its_page(buyers, exchange, visit):
    clock = ManualClock()
    clock.now = datetime.datetime(2026, 6, 15, 12, tzinfo=datetime.timezone.utc).timestamp()
    ex = await exchange(config(buyers), clock=clock)
    first, second = await sell(ex), await sell(ex)
    bea = await visit(ex.url)
    await bea.sign_in("bea")
    page = await bea.get("/ui/purchases")
    assert len(_RETURN_FORM.findall(page.text)) == 2
    form = _RETURN_FORM.search(row(page.text, first))
    assert form and f'name="csrf" value="{page.csrf}"' in form.group(0)
    assert [o for o in re.findall(r'<option value="(\w+)">', form.group(0))] == [
        "invalid_contact", "duplicate", "did_not_request", "out_of_area", "fraud", "other"]

    sent = {"csrf": page.csrf, "lead_id": first, "reason": "duplicate", "from": "2026-01-01", "to": "2027-01-01",
            "tz": "UTC"}
    answer = await bea.post("/ui/purchases/return", sent)
    assert answer.status == 303
    assert answer.headers["Location"] == "/ui/purchases?from=2026-01-01&to=2027-01-01&tz=UTC&notice=pending"
    after = await bea.get(answer.headers["Location"])
    assert "waits for the exchange&#39;s decision" in after.text
    assert 'data-state="pending"' in row(after.text, first) and "<form" not in row(after.text, first)
    assert "<form" in row(after.text, second)
    status, filed = await ex.call("GET", "/v1/returns", key=API_KEYS["bea"])
    assert status == 200 and [(r["lead_id"], r["reason"], r["status"]) for r in filed["returns"]] == [
        (first, "duplicate", "pending")]
    again = await bea.post("/ui/purchases/return", {**sent, "reason": "fraud"})
    assert again.headers["Location"].endswith("notice=pending")  # one return per lead: the first stands
    assert len((await ex.call("GET", "/v1/returns", key=API_KEYS["bea"]))[1]["returns"]) == 1

    bad = await bea.post("/ui/purchases/return", {**sent, "lead_id": second, "reason": "not_a_reason"})
    assert bad.headers["Location"].endswith("notice=reason")
    assert "Choose one of the listed reasons." in (await bea.get(bad.headers["Location"])).text
    clock.advance(8 * 86400)  # past the window, and past the session's life: a new sign-in
    await bea.sign_in("bea")
    sent["csrf"] = (await bea.get("/ui/lookup")).csrf
    closed = await bea.post("/ui/purchases/return", {**sent, "lead_id": second})
    assert closed.headers["Location"].endswith("notice=closed")
    page = await bea.get("/ui/purchases?from=2026-01-01&to=2027-01-01")
    assert "<form" not in row(page.text, second) and "window closed" in row(page.text, second)


async def test_return_forms_need_their_token_and_their_own_site(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    lead_id = await sell(ex)
    bea = await visit(ex.url)
    await bea.sign_in("bea")
    page = await bea.get("/ui/purchases")
    sent = {"lead_id": lead_id, "reason": "duplicate"}
    for form, origin in (({**sent}, "self"), ({**sent, "csrf": "forged"}, "self"),
                         ({**sent, "csrf": page.csrf}, "https://evil.example")):
        refused = await bea.post("/ui/purchases/return", form, origin=origin)
        assert refused.status == 403 and "This form cannot be sent" in refused.text
    assert (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"] == []


async def test_each_role_returns_and_decides_only_what_is_its_own(buyers, exchange, visit):
    ex = await exchange(config(buyers))
    bought_by_b1 = await sell(ex)
    others = {name: await visit(ex.url) for name in ("bob", "sam", "olga")}
    for browser_name, browser in others.items():
        await browser.sign_in(browser_name)
    bob_page = await others["bob"].get("/ui/purchases")
    stolen = await others["bob"].post("/ui/purchases/return", {"csrf": bob_page.csrf, "lead_id": bought_by_b1,
                                                               "reason": "other"})
    assert stolen.status == 404, "another buyer's lead is not found, as an unknown one"
    sam_page = await others["sam"].get("/ui/lookup")
    assert (await others["sam"].post("/ui/purchases/return", {"csrf": sam_page.csrf, "lead_id": bought_by_b1,
                                                              "reason": "other"})).status == 403
    olga_page = await others["olga"].get("/ui/purchases")
    assert bought_by_b1 in olga_page.text and not _RETURN_FORM.search(olga_page.text), "operators decide, not file"
    assert (await others["olga"].post("/ui/purchases/return", {"csrf": olga_page.csrf, "lead_id": bought_by_b1,
                                                               "reason": "other"})).status == 403

    bea = await visit(ex.url)
    await bea.sign_in("bea")
    page = await bea.get("/ui/purchases")
    await bea.post("/ui/purchases/return", {"csrf": page.csrf, "lead_id": bought_by_b1, "reason": "fraud"})
    (filed,) = (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"]
    for name, browser in (("bea", bea), ("bob", others["bob"]), ("sam", others["sam"])):
        token = (await browser.get("/ui/lookup")).csrf
        answer = await browser.post(f"/ui/returns/{filed['return_id']}/approve", {"csrf": token})
        assert answer.status == 403 and "Not for your role" in answer.text, name
    assert (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"][0]["status"] == "pending"


async def test_the_operators_queue_approves_and_denies(buyers, exchange, visit):
    clock = ManualClock()
    ex = await exchange(config(buyers), clock=clock)
    approved, denied = await sell(ex), await sell(ex)
    for lead_id in (approved, denied):
        status, answer = await ex.call("POST", "/v1/buyer/returns", {"lead_id": lead_id, "reason": "fraud",
                                                                     "note": "<b>not</b> a real person"},
                                       key=API_KEYS["bea"])
        assert status == 200 and answer["status"] == "pending"
        clock.advance(1)
    ids = {r["lead_id"]: r["return_id"] for r in (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"]}
    olga = await visit(ex.url)
    await olga.sign_in("olga")
    queue = await olga.get("/ui/returns")
    assert queue.status == 200
    assert re.findall(r'<tr data-return="(\w+)">', queue.text) == [ids[approved], ids[denied]]
    assert "&lt;b&gt;not&lt;/b&gt; a real person" in queue.text and "<b>not</b>" not in queue.text
    assert queue.text.count('action="/ui/returns/') == 4 and queue.text.count(f'value="{queue.csrf}"') >= 4

    assert (await olga.post(f"/ui/returns/{ids[approved]}/approve", {})).status == 403  # no token
    answer = await olga.post(f"/ui/returns/{ids[approved]}/approve", {"csrf": queue.csrf})
    assert answer.status == 303 and answer.headers["Location"] == "/ui/returns?notice=approved"
    answer = await olga.post(f"/ui/returns/{ids[denied]}/deny", {"csrf": queue.csrf, "note": "  the number works  "})
    assert answer.headers["Location"] == "/ui/returns?notice=denied"
    after = await olga.get(answer.headers["Location"])
    assert "Return denied." in after.text and "No returns are waiting." in after.text
    assert (await olga.post("/ui/returns/nope/approve", {"csrf": queue.csrf})).status == 404

    listed = {r["lead_id"]: r for r in (await ex.call("GET", "/v1/returns", key=API_KEYS["olga"]))[1]["returns"]}
    assert listed[approved]["status"] == "approved" and listed[approved]["decided_by"] == "olga"
    assert listed[denied]["status"] == "denied" and listed[denied]["decision_note"] == "the number works"
    decided = await olga.get("/ui/returns?status=approved")
    assert re.findall(r'<tr data-return="(\w+)">', decided.text) == [ids[approved]] and "by olga" in decided.text
    status, report = await ex.call("GET", "/v1/reports", key=API_KEYS["olga"])
    assert (report["totals"]["returns"], report["totals"]["returned_amount"], report["totals"]["revenue"]) == \
        (1, 4.0, 4.0)
    bea = await visit(ex.url)
    await bea.sign_in("bea")
    page = await bea.get("/ui/purchases")
    assert 'data-state="returned"' in row(page.text, approved) and 'data-state="denied"' in row(page.text, denied)
