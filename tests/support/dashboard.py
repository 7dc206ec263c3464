"""The dashboard as its users reach it: a user per role in the config, and a client that
keeps cookies and sends forms the way a browser does (``Visit``).

``with_users(config)`` adds an operator, two sellers' people, two buyers' people (one
password each, hashed with cheap argon2id parameters so tests verify fast), an operator key
and keys for buyers b1 and b2 (``API_KEYS``: each user's role's key, to ask the API what the
page should show); ``visit()`` opens a client on a running exchange.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from argon2 import PasswordHasher
from multidict import CIMultiDictProxy

from tests.support.exchange import OTHER_KEY, SELLER_KEY

HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
OPS_KEY = "ops-key-0001"
B1_KEY = "b1-key-0001"
B2_KEY = "b2-key-0001"
#: Name -> (role, password).
USERS = {
    "olga": ("operator", "olga-password-1"),
    "sam": ("seller:acme", "sam-password-1"),
    "sue": ("seller:other", "sue-password-1"),
    "bea": ("buyer:b1", "bea-password-1"),
    "bob": ("buyer:b2", "bob-password-1"),
}
#: Name -> the API key of the user's role.
API_KEYS = {"olga": OPS_KEY, "sam": SELLER_KEY, "sue": OTHER_KEY, "bea": B1_KEY, "bob": B2_KEY}
_HASHES = {name: HASHER.hash(password) for name, (_, password) in USERS.items()}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def with_users(config: dict[str, Any]) -> dict[str, Any]:
    config["operators"] = [{"id": "ops", "api_keys": [OPS_KEY]}]
    config["buyers"][0]["api_keys"] = [B1_KEY]
    config["buyers"][1]["api_keys"] = [B2_KEY]
    config["users"] = [{"name": name, "password_hash": _HASHES[name], "role": role}
                       for name, (role, _) in USERS.items()]
    return config


class Answer:
    def __init__(self, status: int, text: str, headers: CIMultiDictProxy[str]) -> None:
        self.status = status
        self.text = text
        self.headers = headers

    @property
    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found, self.text
        return found.group(1)


class Visit:
    """One browser's visit: its own cookies, forms sent from the dashboard's own pages."""

    def __init__(self, url: str, new_connections: bool = False) -> None:
        """``new_connections``: every request on a connection of its own, so that the kernel
        spreads them over the workers of ``--workers N``."""
        self.url = url
        # unsafe: keep cookies of an address (127.0.0.1), as a browser does.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             connector=aiohttp.TCPConnector(force_close=new_connections))

    async def get(self, path: str) -> Answer:
        async with self.session.get(self.url + path, allow_redirects=False) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def post(self, path: str, form: dict[str, str], origin: str | None = "self") -> Answer:
        headers = {"Origin": self.url} if origin == "self" else {"Origin": origin} if origin else {}
        async with self.session.post(self.url + path, data=form, headers=headers, allow_redirects=False) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def sign_in(self, name: str, password: str | None = None) -> Answer:
        form = await self.get("/ui/login")
        return await self.post("/ui/login", {"csrf": form.csrf, "name": name,
                                             "password": USERS[name][1] if password is None else password})

    async def sign_out(self) -> Answer:
        page = await self.get("/ui/lookup")
        return await self.post("/ui/logout", {"csrf": page.csrf})

    def cookie(self, name: str) -> str | None:
        found = [c.value for c in self.session.cookie_jar if c.key == name]
        return found[0] if found else None

    async def close(self) -> None:
        await self.session.close()


Visitor = Callable[..., Awaitable[Visit]]


@pytest.fixture
async def visit() -> AsyncIterator[Visitor]:
    """``await visit(exchange.url, new_connections=False)``: a new browser-like client; all
    closed after the test."""
    opened: list[Visit] = []

    async def open_(url: str, new_connections: bool = False) -> Visit:
        opened.append(Visit(url, new_connections))
        return opened[-1]

    yield open_
    for each in opened:
        await each.close()


def shown(metric: str, value: Any) -> str:
    """How the page must write a report's value: what the API answers, as a person reads it."""
    if metric in ("avg_bid", "revenue", "spend", "payout", "margin", "cost_per_lead", "payout_per_post"):
        return f"{'-' if value < 0 else ''}${abs(value):,.2f}"
    if metric.endswith("_rate"):
        return f"{value * 100:.1f}%"
    return f"{value:,}"


_TILE = re.compile(r'<div class="tile" data-metric="(\w+)"><dt>[^<]*</dt><dd>([^<]*)</dd></div>')
_ROW = re.compile(r'<tr><th scope="row">([^<]*)</th>((?:<td>[^<]*</td>)*)</tr>')
_HEAD = re.compile(r'<table class="numbers" data-table="(\w+)">\s*<thead><tr>(.*?)</tr></thead>', re.S)


def overview_numbers(html: str) -> tuple[dict[str, str], str, list[str], list[list[str]]]:
    """An overview page's tiles (metric -> text), its table's dimension, its columns' metrics
    and rows (the group's name, then its cells; the totals row last)."""
    tiles = dict(_TILE.findall(html))
    head = _HEAD.search(html)
    assert head, html
    columns = re.findall(r'data-metric="(\w+)"', head.group(2))
    rows = [[name, *re.findall(r"<td>([^<]*)</td>", cells)] for name, cells in _ROW.findall(html)]
    return tiles, head.group(1), columns, rows
