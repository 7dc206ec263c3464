"""The dashboard at ``/ui/``: server-rendered pages for operators, sellers and buyers.

A sub-application of the exchange's app, so it shares the exchange (its config, store and
books) and the access rules, and has middleware of its own: security headers on every
answer, and errors as pages rather than the API's JSON. Templates (Jinja2, autoescaped)
and the static files ship inside the package. docs/dashboard.md has the pages and the
security choices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from aiohttp import web

from .pages import Pages, guard

if TYPE_CHECKING:
    from ..auction import Exchange
    from ..server import Gate

__all__ = ["make_dashboard"]


def make_dashboard(exchange: Exchange, gate: Callable[[], Gate]) -> web.Application:
    """The dashboard over this exchange; ``gate`` gives the access rules in force now (a
    reload swaps them)."""
    app = web.Application(middlewares=[guard])
    pages = Pages(exchange, gate)
    app.router.add_get("/", pages.overview)
    app.router.add_get("/login", pages.login_form)
    app.router.add_post("/login", pages.login)
    app.router.add_post("/logout", pages.logout)
    app.router.add_get("/lookup", pages.lookup)
    app.router.add_get("/purchases", pages.purchases)
    app.router.add_post("/purchases/return", pages.file_return)
    app.router.add_get("/returns", pages.returns)
    app.router.add_post("/returns/{return_id}/{verb:approve|deny}", pages.decide)
    app.router.add_get("/static/{name}", pages.static)
    return app
