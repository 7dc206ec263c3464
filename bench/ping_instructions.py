"""Instructions per ping of ``Exchange.ping`` with five default-protocol buyers, for an A/B
of the ping path under valgrind (docs/performance.md, "Buyer formats").

Run, for N = 500 and 2,500, in each checkout:
``PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no .venv/bin/python bench/ping_instructions.py N``;
instructions per ping = (I(2,500) - I(500)) / 2,000 (start-up cancels out). One uvloop process
holds the simulated buyers (answering at once, always a bid) and the exchange (memory store,
no seller HTTP): the auction, the fan-out, the HTTP/1.1 client and the buyers' side, which is
the same in both checkouts. Only the engine's public calls are used, so any two checkouts can
be compared.

``ping_instructions.py N OPT_OUTS`` (docs/performance.md, "Privacy: the opt-out check and
sealing a lead"): every ping carries an ``email_sha256`` and a ``phone_sha256``, of a consumer
who did not opt out, and the worker's opt-out list holds ``OPT_OUTS`` random entries (0: an
empty list); the collector is then tuned as ``serve`` tunes it once started (what was made
before is frozen out of its walks). Compare OPT_OUTS = 0 with 1000000.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

import msgspec
import uvloop

from pingpost.auction import Exchange, SellerView
from pingpost.buyers import BuyerClient
from pingpost.config import from_dict
from pingpost.metrics import Metrics
from pingpost.privacy.identifiers import Identifiers
from pingpost.privacy.suppression import Suppression
from pingpost.schema import PingFields
from pingpost.serve import tune_garbage_collector
from pingpost.sim.buyers import Simulator, build_profile
from pingpost.store.memory import MemoryStore

BUYERS = 5


async def pings(n: int, opt_outs: int | None) -> None:
    sim = Simulator(build_profile({"latency_ms": 0, "jitter_ms": 0, "no_bid_rate": 0}), seed=1)
    server = await sim.serve("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = from_dict({
        "sellers": [{"id": "acme", "api_keys": ["acme-live-key"]}], "buyers": [{"id": "b1"}],
        "campaigns": [{"id": f"c{i}", "buyer": "b1", "vertical": "auto", "ping_url": f"{base}/c{i}/ping",
                       "post_url": f"{base}/c{i}/post"} for i in range(BUYERS)]})
    client = BuyerClient()
    exchange = Exchange(config, MemoryStore(time.time), client, Metrics())
    seller = SellerView.of(config.sellers[0])
    ping = PingFields(vertical="auto", zip="90210", state="CA", quality_score=80, attributes={"age": 40})
    if opt_outs is not None:
        exchange.suppression = Suppression(Identifiers(os.urandom(32)))
        exchange.suppression.add(os.urandom(16) for _ in range(opt_outs))
        ping = msgspec.structs.replace(ping, email_sha256=hashlib.sha256(b"ada@example.com").hexdigest(),
                                       phone_sha256=hashlib.sha256(b"4155550134").hexdigest())
        tune_garbage_collector()  # as serve does once started: the list is frozen out of the collector's walks
    for _ in range(n):
        record = await exchange.ping(seller, False, ping, None)
        assert len(record.bids) == BUYERS
    await client.close()
    server.close()
    sim.close_connections()


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    uvloop.run(pings(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
