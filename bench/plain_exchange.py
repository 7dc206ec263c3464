"""A plain ping exchange, the yardstick of ``pingpost bench --baseline``.

What a competent developer would write in a day with aiohttp and the json module: the
seller's ``POST /v1/ping`` (bearer-key auth, JSON decoding with the required fields
checked, campaign filters in plain Python loops, every eligible buyer called at once with
aiohttp's client under ``asyncio.gather`` and its campaign's timeout, the highest bid
wins), answered in pingpost's shape so one load generator drives both. Nothing more: no
ledger, no store, no trace, no metrics, no logging per request.

It reads a pingpost config (the subset the benchmark writes: sellers' keys, campaigns'
vertical, ping URL, timeout and their state, zip, zip-prefix, seller and source filters)::

    python bench/plain_exchange.py --config exchange.toml --port 0

and prints ``listening on URL`` once it accepts connections, as pingpost's servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import secrets
import signal
import time
import tomllib
from typing import Any

import aiohttp
from aiohttp import web

EXPIRES_S = 300


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def answer_of(ping_id: str, best: float, started: float) -> dict[str, Any]:
    """The seller's answer in pingpost's shape: the best bid in dollars (0: none)."""
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=EXPIRES_S)
    answer: dict[str, Any] = {"ping_id": ping_id, "status": "bid" if best > 0 else "no_bid",
                              "expires_at": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
                              "auction_ms": round((time.perf_counter() - started) * 1000, 2)}
    if best > 0:
        answer["price"] = best
    return answer


class Campaign:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.id: str = raw["id"]
        self.vertical: str = raw["vertical"]
        self.ping_url: str | None = raw.get("ping_url")
        self.timeout_s: float = raw.get("timeout_ms", 500) / 1000
        filters = raw.get("filters", {})
        self.states: set[str] | None = set(filters["states"]) if "states" in filters else None
        self.zips: set[str] | None = set(filters["zips"]) if "zips" in filters else None
        self.zip_prefixes: list[str] | None = filters.get("zip_prefixes")
        self.sellers: set[str] | None = set(filters["sellers"]) if "sellers" in filters else None
        self.sources: set[str] | None = set(filters["sources"]) if "sources" in filters else None

    def accepts(self, ping: dict[str, Any], seller: str) -> bool:
        if ping["vertical"] != self.vertical:
            return False
        if self.states is not None and ping.get("state") not in self.states:
            return False
        zip5 = ping["zip"][:5]
        if self.zips is not None and zip5 not in self.zips:
            return False
        if self.zip_prefixes is not None and not any(zip5.startswith(p) for p in self.zip_prefixes):
            return False
        if self.sellers is not None and seller not in self.sellers:
            return False
        if self.sources is not None and ping.get("source_id") not in self.sources:
            return False
        return True


class PlainExchange:
    def __init__(self, config: dict[str, Any]) -> None:
        self.sellers = {key: seller["id"] for seller in config["sellers"] for key in seller["api_keys"]}
        self.campaigns = [Campaign(c) for c in config["campaigns"] if c.get("ping_url")]
        self.auction_timeout_s = config.get("exchange", {}).get("auction_timeout_ms", 1000) / 1000
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        # The default connector allows 100 connections in all; every ping in flight calls every buyer.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, campaign: Campaign, payload: dict[str, Any], timeout_s: float) -> tuple[Campaign, float]:
        """The campaign's bid in dollars; 0 for a no-bid, a timeout or an error."""
        assert self.session is not None
        try:
            async with self.session.post(campaign.ping_url, json={**payload, "campaign_id": campaign.id},  # type: ignore[arg-type]
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if response.status != 200:
                    return campaign, 0.0
                answer = await response.json()
                bid = answer.get("bid")
                return campaign, float(bid) if isinstance(bid, (int, float)) and bid > 0 else 0.0
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return campaign, 0.0

    async def ping(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        auth = request.headers.get("Authorization", "")
        seller = self.sellers.get(auth[7:]) if auth.startswith("Bearer ") else None
        if seller is None:
            return error(401, "unauthorized", "a valid API key is required")
        try:
            ping = json.loads(await request.read())
        except ValueError:
            return error(400, "malformed_json", "the body is not valid JSON")
        if not isinstance(ping, dict) or not isinstance(ping.get("vertical"), str) or not isinstance(ping.get("zip"), str):
            return error(422, "validation_error", "vertical and zip are required strings")
        eligible = [c for c in self.campaigns if c.accepts(ping, seller)]
        ping_id = secrets.token_hex(12)
        budget_s = min(self.auction_timeout_s, ping.get("timeout_ms", 10**9) / 1000)
        payload = {"ping_id": ping_id, "seller_id": seller, "test": False,
                   **{k: v for k, v in ping.items() if k != "timeout_ms"}}
        payload["zip"] = ping["zip"][:5]
        answers = await asyncio.gather(*(self.call(c, payload, min(c.timeout_s, budget_s)) for c in eligible))
        best = max((bid for _, bid in answers), default=0.0)
        return web.json_response(answer_of(ping_id, best, started))


def arguments(description: str) -> argparse.Namespace:
    """The command line both bench exchanges take: the config file and where to listen."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    return parser.parse_args()


async def serve_until_stopped(host: str, port: int) -> None:
    """Say where the server listens, as pingpost's servers do, then wait for SIGTERM or SIGINT."""
    print(f"listening on http://{host}:{port}", flush=True)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await stopping.wait()


async def main() -> None:
    args = arguments(__doc__)
    with open(args.config, "rb") as f:
        exchange = PlainExchange(tomllib.load(f))
    app = web.Application()
    app.router.add_post("/v1/ping", exchange.ping)
    app.on_startup.append(exchange.start)
    app.on_cleanup.append(exchange.stop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    await serve_until_stopped(args.host, runner.addresses[0][1])
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
