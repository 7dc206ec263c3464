"""The scenarios ``pingpost bench`` runs, and the files each one is run from: the exchange's
config and the simulated buyers' profile, both TOML, written into the run's work dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

API_KEY = "bench-live-key-0001"
VERTICAL = "auto_insurance"
#: every buyer answers pings and posts in exactly this long (jitter 0), so overhead = latency - this
BUYER_MS = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    http: int                 #: HTTP campaigns that pass the filters (all get pinged)
    filtered: int = 0         #: campaigns of the same vertical whose filters fail every bench ping
    post_share: float = 0.0   #: share of bid pings the seller then posts
    reject_rate: float = 0.0  #: share of posts a buyer rejects (the cascade moves on)


SCENARIOS = {s.name: s for s in (
    Scenario("5-http", "5 HTTP campaigns, buyers answer in 10 ms", http=5),
    Scenario("50-http", "50 HTTP campaigns, buyers answer in 10 ms", http=50),
    Scenario("10k-campaigns", "10,000 campaigns, 20 pass the filters", http=20, filtered=9_980),
    Scenario("ping-post", "5 HTTP campaigns; 30% of pings posted, buyers reject 20% of posts",
             http=5, post_share=0.3, reject_rate=0.2),
)}


def toml(value: Any) -> str:
    """Just enough TOML for the generated files: scalars, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_document(tables: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]]) -> str:
    lines: list[str] = []
    for name, table_ in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml(v)}" for k, v in table_.items()]
        lines.append("")
    for name, items in arrays.items():
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {toml(v)}" for k, v in item.items()]
            lines.append("")
    return "\n".join(lines)


def scenario_config(s: Scenario, buyers_url: str, key_file: str | None = None) -> str:
    """The exchange's config: one seller, HTTP campaigns pointing at the simulator, and the
    operator's key file (the books seal leads' personal data under it) when given.

    Filtered campaigns fail every bench ping in one of three ways (the bench pings come
    from 15 mainland places, never Hawaii): a state, a zip prefix or a source filter."""
    failing = ({"states": ["HI"]}, {"zip_prefixes": ["967", "968"]}, {"sources": ["nowhere"]})
    campaigns = []
    for n in range(s.http + s.filtered):
        cid = f"c{n:05d}"
        campaign = {"id": cid, "buyer": f"b{n // 100:03d}", "vertical": VERTICAL,
                    "ping_url": f"{buyers_url}/{cid}/ping", "post_url": f"{buyers_url}/{cid}/post",
                    "timeout_ms": 500, "post_timeout_ms": 3000}
        if n >= s.http:
            campaign["filters"] = failing[n % 3]
        campaigns.append(campaign)
    buyers = [{"id": f"b{n:03d}"} for n in range((s.http + s.filtered + 99) // 100)]
    tables: dict[str, dict[str, Any]] = {"exchange": {
        "auction_timeout_ms": 1000, "post_timeout_ms": 10000, "max_buyers_per_ping": 50, "max_inflight": 10000}}
    if key_file is not None:
        tables["privacy"] = {"key_file": key_file}
    return toml_document(tables, {"sellers": [{"id": "bench", "api_keys": [API_KEY]}], "buyers": buyers,
                                  "campaigns": campaigns})


def scenario_profile(s: Scenario) -> str:
    return toml_document({"default": {"latency_ms": BUYER_MS, "jitter_ms": 0.0, "post_latency_ms": BUYER_MS,
                                      "no_bid_rate": 0.0, "reject_rate": s.reject_rate,
                                      "bid_min": 1.0, "bid_max": 20.0}}, {})
