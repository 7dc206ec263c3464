"""Campaign sets for the targeting benchmarks: one vertical, filters mixed as on a busy exchange.

Deterministic (seeded) so that runs compare. Roughly: a third of campaigns target states,
a sixth list zips (tens to hundreds), a fifth zip prefixes, some restrict sellers or
sources, 40% want a minimum quality, 30% run on a schedule in one of four US zones (some
overnight), 30% carry one or two attribute rules (the benchmark caps or benches a tenth); the
typical ping below passes the filters of about 29% of them (2,876 of 10,000).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from pingpost.config import Config
from pingpost.normalize import US_STATES

PING_JSON = (b'{"vertical":"auto_insurance","zip":"90210-1234","state":"ca","source_id":"web",'
             b'"sub_id":"a1","quality_score":62,"tcpa_consent":true,'
             b'"email_sha256":"' + b"ab" * 32 + b'","attributes":{"credit":"good","age":35,'
             b'"homeowner":true,"vehicles":2,"tags":["sr22","multi_car"]}}')
SELLER = "seller_3"
NOW = 1_704_200_400.0  # Tue 2024-01-02 13:00 UTC
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
RULES: list[dict[str, Any]] = [
    {"field": "credit", "op": "in", "value": ["good", "excellent"]},
    {"field": "age", "op": "between", "value": [25, 65]},
    {"field": "homeowner", "op": "eq", "value": True},
    {"field": "vehicles", "op": "gte", "value": 2},
    {"field": "tags", "op": "eq", "value": "sr22"},
    {"field": "credit", "op": "ne", "value": "poor"},
    {"field": "military", "op": "exists", "value": False},
]


def campaign_filters(rng: random.Random) -> dict[str, Any]:
    states = sorted(US_STATES)
    f: dict[str, Any] = {}
    if rng.random() < 0.33:
        f["states"] = rng.sample(states, rng.randint(1, 5))
    if rng.random() < 0.10:
        f["exclude_states"] = rng.sample(states, rng.randint(1, 3))
    if rng.random() < 0.15:
        f["zips"] = [f"{rng.randint(0, 99999):05d}" for _ in range(rng.randint(20, 200))] + ["90210"] * (rng.random() < 0.3)
    if rng.random() < 0.05:
        f["exclude_zips"] = [f"{rng.randint(0, 99999):05d}" for _ in range(rng.randint(5, 50))]
    if rng.random() < 0.20:
        f["zip_prefixes"] = [f"{rng.randint(0, 999):03d}" for _ in range(rng.randint(1, 10))] + ["902"] * (rng.random() < 0.5)
    if rng.random() < 0.10:
        f["sellers"] = [f"seller_{rng.randint(0, 19)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.05:
        f["exclude_sellers"] = [f"seller_{rng.randint(0, 19)}"]
    if rng.random() < 0.10:
        f["sources"] = rng.sample(["web", "app", "call", "affiliate"], rng.randint(1, 2))
    if rng.random() < 0.05:
        f["exclude_sources"] = ["affiliate"]
    if rng.random() < 0.40:
        f["min_quality"] = rng.randint(10, 80)
    if rng.random() < 0.30:
        start, end = rng.choice([("08:00", "20:00"), ("09:00", "17:00"), ("20:00", "06:00"), ("00:00", "24:00")])
        days = rng.choice([["mon", "tue", "wed", "thu", "fri"], ["sat", "sun"], ["mon", "wed", "fri"]])
        f["schedule"] = {"days": days, "start": start, "end": end, "timezone": rng.choice(ZONES)}
    if rng.random() < 0.30:
        f["rules"] = rng.sample(RULES, rng.randint(1, 2))
    return f


def make_config(n: int, seed: int = 3) -> Config:
    rng = random.Random(seed)
    raw = {
        "buyers": [{"id": "b"}],
        "campaigns": [{"id": f"c{i}", "buyer": "b", "vertical": "auto_insurance", "post_url": "http://b/post",
                       "fixed_price": 1.0, "priority": rng.choice([0, 0, 0, 1, 2]), "filters": campaign_filters(rng)}
                      for i in range(n)],
    }
    return msgspec.convert(raw, Config)
