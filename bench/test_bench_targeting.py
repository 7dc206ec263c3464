"""Hot-path benchmarks: compiled targeting and ranking beside the reference, in one run.

Run: ``taskset -c 1 .venv/bin/pytest bench/ --benchmark-only`` (results: docs/performance.md).
"""

from __future__ import annotations

import random

import msgspec
import pytest

from pingpost import targeting
from pingpost.config import Vertical
from pingpost.schema import FieldError, PingFields, PingRequest
from pingpost.server import decode, ping_of, refuse

from campaign_sets import NOW, PING_JSON, SELLER, make_config

IMPLEMENTATIONS = {"reference": targeting.Index, "compiled": targeting.build_index}


@pytest.fixture(scope="module")
def ping() -> PingRequest:
    return msgspec.json.decode(PING_JSON, type=PingRequest)


@pytest.fixture(scope="module")
def configs() -> dict:
    return {n: make_config(n) for n in (10, 1_000, 10_000)}


@pytest.fixture(autouse=True)
def require_compiled() -> None:
    assert targeting._compiled is not None, "pingpost._targeting is not built: run pip install -e ."


def test_ping_decode_validate(benchmark) -> None:
    decoder = msgspec.json.Decoder(PingRequest)
    benchmark.group = "ping decode+validate"
    assert benchmark(decoder.decode, PING_JSON).zip == "90210-1234"


AUTO = Vertical(id="auto_insurance", attributes={"credit": "string", "age": "int", "homeowner": "bool",
                                                 "vehicles": "int", "tags": "list[string]"})


@pytest.mark.parametrize("verticals", [{}, {"auto_insurance": AUTO}], ids=["undeclared", "declared"])
def test_ping_server_decode(benchmark, verticals: dict[str, Vertical]) -> None:
    """All the server does with a ping body before the auction: decode and validate, the
    personal-data guard, normalization, a declared vertical's attribute types."""
    decoder = msgspec.json.Decoder(PingRequest)

    def run() -> PingFields:
        problems: list[FieldError] = []
        ping = ping_of(decode(decoder, PING_JSON, ping_fields=True, verticals=verticals), verticals, problems)
        refuse(problems)
        return ping

    benchmark.group = "ping decode + validate + guard (server)"
    assert benchmark(run).zip == "90210"


@pytest.mark.parametrize("size", [10, 1_000, 10_000])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_eligibility(benchmark, configs, ping, size: int, impl: str) -> None:
    index = IMPLEMENTATIONS[impl](configs[size])
    blocks = bytearray(random.Random(1).choices([0] * 18 + [1, 2], k=size))
    last_bids = [random.Random(i).choice([0, 150, 275, 400]) for i in range(size)]
    benchmark.group = f"eligibility, {size} campaigns"
    out = benchmark(index.select, ping, SELLER, NOW, blocks, last_bids)
    benchmark.extra_info["eligible"] = len(out.eligible)
    benchmark.extra_info["not_selected"] = len(out.reasons) + sum(out.counts.values())
    assert len(out.eligible) + benchmark.extra_info["not_selected"] == size


@pytest.mark.parametrize("ranking", ["bid", "expected"])
@pytest.mark.parametrize("impl", ["reference", "compiled"])
def test_rank_50_bids(benchmark, impl: str, ranking: str) -> None:
    """50 bids of campaigns numbered among 10,000, ranked by bid or by bid x accept rate
    (rates as a store's view holds them: most campaigns at the prior, some counted)."""
    rng = random.Random(5)
    bids = [targeting.Bid(rng.randrange(10_000), rng.choice([150, 200, 200, 275, 400]), rng.choice([0, 1]))
            for _ in range(50)]
    rates = [rng.choice([1_000_000] * 3 + [950_000, 800_000, 412_345]) for _ in range(10_000)]
    rank = targeting.reference_rank if impl == "reference" else targeting.rank
    benchmark.group = f"rank 50 bids by {ranking}"
    ranked, dropped = benchmark(rank, bids, 175, 0x5EED, rates if ranking == "expected" else None)
    assert len(ranked) + len(dropped) == 50


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_index_build_10000(benchmark, configs, impl: str) -> None:
    config = configs[10_000]
    benchmark.group = "index build, 10000 campaigns"
    index = benchmark.pedantic(IMPLEMENTATIONS[impl], args=(config,), rounds=5, iterations=1)
    assert len(index.campaigns) == 10_000
