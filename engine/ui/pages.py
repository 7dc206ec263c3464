"""The dashboard's handlers: sign-in and sign-out, and one handler per page.

Every page starts from the visitor's ``Principal`` (the access layer's, found from the
session's user as the config says now) and asks only through it: the report function
with the principal's scope, ``principal.trace`` for a lookup, ``principal.require`` for a
page that is not the role's. A handler never filters rows itself.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import urllib.parse
import zoneinfo
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple

from aiohttp import web
from msgspec import UNSET

import msgspec

from .. import money, reports, returns
from ..access import Principal, Role
from ..config import zone
from ..errors import ApiError, Code
from ..ledger import LedgerUnavailable, PurchaseQuery, ReturnQuery
from ..ledger.returns import APPROVED, DENIED, PENDING
from ..schema import ReturnRequest
from ..store.base import StoreUnavailable
from . import charts as charts_
from . import numbers, views
from .security import (SESSION_COOKIE, SIGNIN_COOKIE, SIGNIN_FORM_S, CsrfRefused, check_origin, check_token,
                       clear_cookie, secure_headers, set_cookie)
from .sessions import Session, Sessions
from .signin import Throttle
from .templates import render, static

if TYPE_CHECKING:
    from ..auction import Exchange
    from ..server import Gate

log = logging.getLogger("pingpost.ui")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Page(NamedTuple):
    href: str
    label: str
    roles: tuple[Role, ...]


EVERYONE = (Role.OPERATOR, Role.SELLER, Role.BUYER)
#: The pages, in the navigation's order, with the roles each is for: the navigation shows
#: a principal its own, and a handler refuses (403) any other role through ``require``.
PAGES = {
    "overview": Page("/ui/", "Overview", EVERYONE),
    "lookup": Page("/ui/lookup", "Lead lookup", EVERYONE),
    "purchases": Page("/ui/purchases", "Purchases", (Role.BUYER, Role.OPERATOR)),
    "returns": Page("/ui/returns", "Returns", (Role.OPERATOR,)),
}
ROLE_LABELS = {Role.OPERATOR: "operator", Role.SELLER: "seller", Role.BUYER: "buyer"}

#: Zones offered in the picker, besides the exchange's own and the one in use.
ZONES = ("UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles",
         "America/Anchorage", "Pacific/Honolulu", "America/Toronto", "America/Mexico_City", "America/Sao_Paulo",
         "Europe/London", "Europe/Berlin", "Europe/Paris", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo",
         "Australia/Sydney")
#: Up to this many days a chart has a bar per hour; beyond, a bar per day.
HOURLY_UP_TO_DAYS = 2
PURCHASES_SHOWN = 200
RETURNS_SHOWN = 200
#: The queue's views, the one that waits for a decision first.
QUEUES = (PENDING, APPROVED, DENIED)
#: What a page says after a form: the buyer's return, the operator's decision (``?notice=``).
NOTICES = {
    "purchases": {
        "approved": "Return approved: the lead's price is credited back to you.",
        "pending": "Return filed: it is past your monthly return rate, so it waits for the exchange's decision.",
        "denied": "The exchange denied this lead's return.",
        "closed": "This lead's return window has closed.",
        "reason": "Choose one of the listed reasons.",
    },
    "returns": {"approved": "Return approved: the buyer is credited.", "denied": "Return denied."},
}


@dataclass(frozen=True, slots=True)
class Visitor:
    principal: Principal
    session: Session
    token: str

    @property
    def name(self) -> str:
        return self.session.user

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def role_label(self) -> str:
        p = self.principal
        return ROLE_LABELS[p.role] if p.role is Role.OPERATOR else f"{ROLE_LABELS[p.role]} {p.id}"

    @property
    def links(self) -> list[Page]:
        return [page for page in PAGES.values() if self.principal.role in page.roles]


#: The signed-in visitor of a request, for its error page's menu.
VISITOR = web.RequestKey("visitor", Visitor)


class Refused(Exception):
    """A page answered with a message rather than its content (not signed in, too many tries)."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response


def _error_page(status: int, heading: str, message: str, visitor: Visitor | None = None) -> web.Response:
    back, label = ("/ui/", "Back to the overview") if visitor else ("/ui/login", "Sign in")
    return render("error.html", status=status, heading=heading, message=message, back=back, back_label=label,
                  visitor=visitor)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the dashboard, its errors too, is a page with the security headers."""
    try:
        response = await handler(request)
    except Refused as refusal:
        response = refusal.response
    except CsrfRefused:
        response = _error_page(403, "This form cannot be sent",
                               "It was not sent from this dashboard's own page, or the page is too old. "
                               "Reload the page and try again.")
    except ApiError as exc:
        if exc.code is Code.FORBIDDEN:
            response = _error_page(403, "Not for your role", "This page belongs to another role. "
                                   "The pages in the menu are yours.", request.get(VISITOR))
        elif exc.code is Code.NOT_FOUND:
            response = _error_page(404, "Not found", exc.message, request.get(VISITOR))
        else:
            raise
    except web.HTTPNotFound:
        response = _error_page(404, "Not found", "There is no such page in the dashboard.", request.get(VISITOR))
    except web.HTTPMethodNotAllowed as exc:
        response = _error_page(405, "Not allowed", f"{request.method} is not allowed here.", request.get(VISITOR))
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except (StoreUnavailable, LedgerUnavailable) as exc:
        log.warning("dashboard unavailable", extra={"event": {"event": "ui_unavailable", "path": request.path,
                                                               "error": type(exc).__name__}})
        response = _error_page(503, "Try again shortly",
                               "The exchange cannot read its records right now. Reload the page in a moment.")
    except web.HTTPException as exc:
        secure_headers(exc, page=True)
        raise
    except Exception:
        log.exception("unhandled", extra={"event": {"event": "unhandled", "path": request.path}})
        response = _error_page(500, "Something went wrong", "The exchange could not show this page. "
                               "Reload it; if it keeps failing, tell the exchange's operator.")
    if "Content-Security-Policy" not in response.headers:
        secure_headers(response, page=True)
    return response


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another site."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class QuickRange(NamedTuple):
    label: str
    href: str
    current: bool


#: What the overview says its numbers are, per role.
SCOPE_NOTES = {
    Role.OPERATOR: "Every seller's and buyer's traffic on the exchange. Test traffic is left out.",
    Role.SELLER: "Your pings, posts and sales, and what the exchange pays you for them. Test traffic is left out.",
    Role.BUYER: "What your campaigns were sent, bid on and bought, and what you spent. Test traffic is left out.",
}
EMPTY_HINTS = {
    Role.OPERATOR: "Widen the date range, or check that sellers are sending pings with their live keys.",
    Role.SELLER: "Widen the date range, or send pings with a live key: test-key traffic is not counted here.",
    Role.BUYER: "Widen the date range, or check that your campaigns are active and their filters match the traffic.",
}


class Query(NamedTuple):
    """A page's date range (inclusive days) in a time zone, and the table's dimension."""

    start: datetime.date
    end: datetime.date
    tz: str
    by: str


class Pages:
    def __init__(self, exchange: Exchange, gate: Callable[[], Gate]) -> None:
        self.exchange = exchange
        self.gate = gate
        self.sessions = Sessions(exchange.store, exchange.clock)
        self.throttle = Throttle(exchange.store, exchange.clock)

    # Who is asking -----------------------------------------------------------------------

    async def _visitor(self, request: web.Request) -> Visitor | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        users = {user.name: user for user in self.exchange.config.users}
        session = await self.sessions.find(token, users)
        principal = self.gate().access.user(session.user) if session is not None else None
        if session is None or principal is None:
            return None
        visitor = Visitor(principal, session, token)
        request[VISITOR] = visitor
        return visitor

    async def _signed_in(self, request: web.Request, page: str) -> Visitor:
        """The visitor, who may see ``page`` (403 otherwise); not signed in: to the sign-in page."""
        visitor = await self._visitor(request)
        if visitor is None:
            query = urllib.parse.urlencode({"next": request.path_qs})
            raise Refused(_redirect(f"/ui/login?{query}"))
        visitor.principal.require(*PAGES[page].roles)
        return visitor

    # Sign-in and sign-out ----------------------------------------------------------------

    def _login_page(self, request: web.Request, status: int = 200, problem: str = "", name: str = "",
                    target: str = "/ui/") -> web.Response:
        """The sign-in form, with a fresh token in the form and in its cookie."""
        token = secrets.token_urlsafe(32)
        response = render("login.html", status=status, csrf=token, next=target, problem=problem, name=name)
        set_cookie(response, self.gate().over_https(request), SIGNIN_COOKIE, token, max_age=SIGNIN_FORM_S)
        return response

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        target = _safe_next(request.query.get("next"))
        if await self._visitor(request) is not None:
            return _redirect(target)
        return self._login_page(request, target=target)

    async def login(self, request: web.Request) -> web.StreamResponse:
        check_origin(request)
        form = await request.post()
        check_token(form.get("csrf"), request.cookies.get(SIGNIN_COOKIE))
        name = str(form.get("name", "")).strip().lower()
        password = str(form.get("password", ""))
        target = _safe_next(str(form.get("next", "")))
        address = str(self.gate().client_address(request) or "")
        wait = await self.throttle.wait_s(name, address)
        if wait > 0:
            seconds = max(1, round(wait))
            response = self._login_page(request, 429, f"Too many failed sign-ins. Try again in {seconds} s.", name,
                                        target)
            response.headers["Retry-After"] = str(seconds)
            return response
        access = self.gate().access
        principal = await asyncio.get_running_loop().run_in_executor(None, access.sign_in, name, password)
        user = next((u for u in self.exchange.config.users if u.name == name), None)
        if principal is None or user is None:
            await self.throttle.failed(name, address)
            return self._login_page(request, 401, "Wrong name or password.", name, target)
        await self.throttle.succeeded(name)
        token, _ = await self.sessions.open(user)
        log.info("signed in", extra={"event": {"event": "sign_in", "role": str(principal.role)}})
        response = _redirect(target)
        set_cookie(response, self.gate().over_https(request), SESSION_COOKIE, token)
        clear_cookie(response, SIGNIN_COOKIE)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        check_origin(request)
        form = await request.post()
        visitor = await self._visitor(request)
        if visitor is None:  # nothing to sign out of (expired already): the form's token cannot match
            raise CsrfRefused()
        check_token(form.get("csrf"), visitor.csrf)
        await self.sessions.close(visitor.token)
        response = _redirect("/ui/login")
        clear_cookie(response, SESSION_COOKIE)
        return response

    # Pages -------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.StreamResponse:
        """Totals, a chart each of pings, sold and money over the range, and a table by one
        of the role's dimensions: two reports, asked of the report function the API answers
        ``GET /v1/reports`` with, in the visitor's scope."""
        visitor = await self._signed_in(request, "overview")
        principal = visitor.principal
        query, problem = self._query(request, principal)
        unit = "hour" if (query.end - query.start).days < HOURLY_UP_TO_DAYS else "day"
        series, table = await asyncio.gather(self._report(principal, query, unit), self._report(principal, query, query.by))
        metrics = principal.metrics
        money_metric = views.money_metric(metrics)
        tz = zoneinfo.ZoneInfo(query.tz)
        by_slot = {row[unit]: row for row in series.rows}
        slots = views.slots(query.start, query.end, tz, unit)
        charts = [views.Chart(metric, caption, charts_.bar_chart(
            [charts_.Point(slot.label, float(by_slot[slot.key][metric]) if slot.key in by_slot else 0.0, slot.when)
             for slot in slots], title=f"{caption} per {unit}", unit=unit_word, is_money=metric == money_metric,
            kind=kind)) for metric, caption, unit_word, kind in (
                ("pings", "Pings", "pings", "count"), ("sold", "Sold", "sold", "sold"),
                (money_metric, views.LABELS[money_metric], "", "money"))]
        return render("overview.html", visitor=visitor, here=PAGES["overview"].href, query=query, problem=problem,
                      zones=self._zones(query.tz), dimensions=[d for d in principal.dimensions if d not in views.TIME],
                      labels=views.LABELS, ranges=self._ranges(query), tiles=views.tiles(metrics, series.totals),
                      charts=charts, table=views.table(query.by, metrics, table.rows, table.totals),
                      scope_note=SCOPE_NOTES[principal.role], empty_hint=EMPTY_HINTS[principal.role])

    async def lookup(self, request: web.Request) -> web.StreamResponse:
        """A ping by its ping_id, or a sold lead's ping by its lead_id, as the principal may
        see it; someone else's is not found, exactly as an unknown id."""
        visitor = await self._signed_in(request, "lookup")
        wanted = request.query.get("id", "").strip()[:128]
        values: dict[str, Any] = {"visitor": visitor, "here": PAGES["lookup"].href, "wanted": wanted, "trace": None, "problem": "",
                  "problem_hint": ""}
        if not wanted:
            return render("lookup.html", **values)
        record = await self.exchange.find_ping(wanted)
        by_lead = record is None
        if by_lead:
            sale = await self.exchange.ledger.get_sale(wanted)
            record = await self.exchange.find_ping(sale.ping_id) if sale is not None else None
        try:
            trace = visitor.principal.trace(record)
            if by_lead and (trace.post is UNSET or trace.post.lead_id != wanted):
                raise ApiError(Code.NOT_FOUND)  # its ping is theirs to see, the lead is not: a buyer that did not buy
        except ApiError as exc:
            if exc.code is not Code.NOT_FOUND:
                raise
            values.update(problem=f"Nothing found for {wanted}.",
                          problem_hint="Check the id: it is a ping_id or a lead_id of your own traffic. Pings "
                                       f"that did not sell are kept {self.exchange.config.ledger.keep_days:,} days.")
            return render("lookup.html", status=404, **values)
        values["trace"] = views.trace_view(trace, zone(self.exchange.config.exchange.timezone))
        return render("lookup.html", **values)

    async def purchases(self, request: web.Request) -> web.StreamResponse:
        """The buyer's purchases (an operator's: every buyer's), newest first, from the books,
        with what became of each one's return; a buyer's own have a return form while their
        window is open."""
        visitor = await self._signed_in(request, "purchases")
        query, problem = self._query(request, visitor.principal)
        since, until = _bounds(query)
        principal = visitor.principal
        found = await self.exchange.ledger.purchases(PurchaseQuery(since, until, principal.buyer_id, False, None,
                                                                   PURCHASES_SHOWN + 1))
        tz = zoneinfo.ZoneInfo(query.tz)
        buyer = self.exchange.buyers.get(principal.id) if principal.role is Role.BUYER else None
        now, own = self.exchange.clock(), zone(self.exchange.config.exchange.timezone)
        shown = [views.purchase(bought, tz, buyer is not None and now < returns.window_closes(
            bought.sale.sold_at, buyer.return_window_days, own)) for bought in found[:PURCHASES_SHOWN]]
        total = sum(bought.sale.buyer_price_cents for bought in found[:PURCHASES_SHOWN])
        summary = (f"{numbers.count(len(shown))} lead{'s' if len(shown) != 1 else ''}, "
                   f"{numbers.money(money.to_amount(total))} in all.")
        return render("purchases.html", visitor=visitor, here=PAGES["purchases"].href, query=query, problem=problem,
                      zones=self._zones(query.tz), purchases=shown, more=len(found) > PURCHASES_SHOWN,
                      summary=summary, by_buyer=principal.buyer_id is None, states=views.STATES,
                      reasons=buyer.return_reasons if buyer is not None else [],
                      notice=NOTICES["purchases"].get(request.query.get("notice", ""), ""))

    async def file_return(self, request: web.Request) -> web.StreamResponse:
        """A buyer's return form: filed as ``POST /v1/buyer/returns`` files it, then back to
        the purchases of the same range, saying what became of it."""
        check_origin(request)
        form = await request.post()
        visitor = await self._signed_in(request, "purchases")
        check_token(form.get("csrf"), visitor.csrf)
        try:
            asked = msgspec.convert({"lead_id": form.get("lead_id"), "reason": form.get("reason")}, ReturnRequest)
            notice = (await returns.file(self.exchange, visitor.principal, asked)).status
        except msgspec.ValidationError:
            notice = "reason"
        except ApiError as exc:
            if exc.code not in (Code.RETURN_WINDOW_CLOSED, Code.VALIDATION_ERROR):
                raise
            notice = "closed" if exc.code is Code.RETURN_WINDOW_CLOSED else "reason"
        back = {name: str(form[name]) for name in ("from", "to", "tz") if isinstance(form.get(name), str)}
        return _redirect("/ui/purchases?" + urllib.parse.urlencode({**back, "notice": notice}))

    async def returns(self, request: web.Request) -> web.StreamResponse:
        """The operators' queue: returns of one status (pending by default), oldest first,
        with approve and deny forms on the pending ones."""
        visitor = await self._signed_in(request, "returns")
        status = request.query.get("status", PENDING)
        status = status if status in QUEUES else PENDING
        found = await self.exchange.ledger.returns(ReturnQuery(status, None, None, None, RETURNS_SHOWN + 1))
        tz = zone(self.exchange.config.exchange.timezone)
        return render("returns.html", visitor=visitor, here=PAGES["returns"].href, listed=status, statuses=QUEUES,
                      returns=[views.filed_return(filed, tz) for filed in found[:RETURNS_SHOWN]],
                      more=len(found) > RETURNS_SHOWN, tz=self.exchange.config.exchange.timezone,
                      notice=NOTICES["returns"].get(request.query.get("notice", ""), ""))

    async def decide(self, request: web.Request) -> web.StreamResponse:
        """An operator's approve or deny form, decided as the API decides it."""
        check_origin(request)
        form = await request.post()
        visitor = await self._signed_in(request, "returns")
        check_token(form.get("csrf"), visitor.csrf)
        note = str(form.get("note", "")).strip()[:1000] or None
        decided = await returns.decide(self.exchange, visitor.principal, request.match_info["return_id"],
                                       request.match_info["verb"] == "approve", note)
        return _redirect("/ui/returns?" + urllib.parse.urlencode({"notice": decided.status}))

    async def static(self, request: web.Request) -> web.StreamResponse:
        return static(request.match_info["name"])

    async def _report(self, principal: Principal, query: Query, by: str) -> reports.Report:
        """The report ``GET /v1/reports`` answers for this principal, range and grouping (live traffic)."""
        asked = reports.ReportQuery(query.start, query.end, query.tz, (by,), test=False, csv=False)
        return await reports.build(self.exchange.ledger, principal, asked)

    def _ranges(self, query: Query) -> list[QuickRange]:
        """Today, yesterday, the last 7 and 30 days, in the page's zone and for its table."""
        today = datetime.datetime.fromtimestamp(self.exchange.clock(), zoneinfo.ZoneInfo(query.tz)).date()
        found = []
        for label, back, days in (("Today", 0, 1), ("Yesterday", 1, 1), ("Last 7 days", 0, 7), ("Last 30 days", 0, 30)):
            end = today - datetime.timedelta(days=back)
            start = end - datetime.timedelta(days=days - 1)
            href = "/ui/?" + urllib.parse.urlencode({"from": start.isoformat(), "to": end.isoformat(), "tz": query.tz,
                                                      "by": query.by})
            found.append(QuickRange(label, href, (start, end) == (query.start, query.end)))
        return found

    # Ranges ------------------------------------------------------------------------------

    def _zones(self, current: str) -> list[str]:
        own = self.exchange.config.exchange.timezone
        return sorted({*ZONES, own, current})

    def _query(self, request: web.Request, principal: Principal) -> tuple[Query, str]:
        """The page's range, read by the reports' own rules (``reports.parse``); what was
        wrong with it (then today in the exchange's zone stands in), or an empty string."""
        tables = [d for d in principal.dimensions if d not in views.TIME]
        by = request.query.get("by", "")
        by = by if by in tables else tables[0]
        given = [(name, request.query[name]) for name in ("from", "to", "tz") if name in request.query]
        own, now = self.exchange.config.exchange.timezone, self.exchange.clock()
        problem = ""
        try:
            asked = reports.parse(given, principal, own, now)
        except ApiError as exc:
            if exc.code is not Code.VALIDATION_ERROR:
                raise
            asked = reports.parse([], principal, own, now)
            problem = f"{exc.message}. Showing today in {own}."
        return Query(asked.start, asked.end, asked.tz, by), problem


def _bounds(query: Query) -> tuple[float, float]:
    """The range as epoch seconds, [start of its first day, start of the day after its last)."""
    tz = zoneinfo.ZoneInfo(query.tz)
    start = datetime.datetime.combine(query.start, datetime.time(), tz)
    end = datetime.datetime.combine(query.end + datetime.timedelta(days=1), datetime.time(), tz)
    return start.timestamp(), end.timestamp()
