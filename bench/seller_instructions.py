"""The whole seller ping in one process, for an A/B that the machine's noise cannot move:
instructions (valgrind) or CPU time per ping, seller HTTP and books included.

Run, for N = 500 and 2,500, in each checkout (docs/performance.md, "Against a plain exchange"):
``PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no .venv/bin/python bench/seller_instructions.py SCENARIO N [none]``;
instructions per ping = (I(2,500) - I(500)) / 2,000 (start-up cancels out). Without valgrind it
prints the process CPU time per ping of the measured pings.

One uvloop process holds the simulated buyers (answering at once, always a bid), the exchange
as ``pingpost serve`` runs it (``make_app`` behind ``connections.listen``, the memory store, the
SQLite books in a temp dir with their writer thread, JSON logs at info to /dev/null, the
collector tuned) and a lean seller sending ``pingpost bench``'s pre-encoded pings on 32
keep-alive connections, back to back. ``SCENARIO`` is one of ``pingpost bench``'s
(``5-http``, ``10k-campaigns``): the same config, the buyers at 0 ms instead of 10. With
``none`` there are no books: the writer thread's commits, whose sizes follow the threads' timing,
move the count by a few percent between runs of one checkout, and without them nothing does.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import msgspec
import uvloop
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_overhead import send_pings  # noqa: E402
from pingpost import ledger, logs  # noqa: E402
from pingpost.benchmark.scenarios import API_KEY, SCENARIOS, VERTICAL, scenario_config  # noqa: E402
from pingpost.config import load  # noqa: E402
from pingpost.connections import Limits, listen  # noqa: E402
from pingpost.metrics import Metrics  # noqa: E402
from pingpost.privacy import keys  # noqa: E402
from pingpost.serve import tune_garbage_collector  # noqa: E402
from pingpost.server import make_app  # noqa: E402
from pingpost.sim.buyers import Simulator, build_profile  # noqa: E402
from pingpost.sim.traffic import Generator  # noqa: E402
from pingpost.store.memory import MemoryStore  # noqa: E402


def requests() -> list[bytes]:
    generator = Generator(1, verticals=[VERTICAL])
    out = []
    for _ in range(100):
        body = msgspec.json.encode(generator.sample().ping)
        out.append(b"POST /v1/ping HTTP/1.1\r\nHost: exchange\r\nAuthorization: Bearer %s\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (API_KEY.encode(), len(body), body))
    return out


async def main(scenario: str, n: int, books_url: str) -> None:
    sim = Simulator(build_profile({"latency_ms": 0, "jitter_ms": 0, "no_bid_rate": 0}), seed=1)
    buyers = await sim.serve("127.0.0.1", 0)
    work = Path(tempfile.mkdtemp(prefix="pingpost-instructions-"))
    (work / "config.toml").write_text(scenario_config(SCENARIOS[scenario],
                                                      f"http://127.0.0.1:{buyers.sockets[0].getsockname()[1]}"))
    config = load(str(work / "config.toml"))
    books = await ledger.open(books_url.format(work=work), key=keys.load(None, {keys.KEY_ENV: keys.generate()}))
    app = make_app(config, MemoryStore(), ledger=books)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listener = await listen(runner, Limits(config.exchange, 10_000, Metrics()), "127.0.0.1", 0, None, False)
    port = listener.sockets[0].getsockname()[1]
    pings = requests()
    tune_garbage_collector()
    await send_pings(port, pings, 200)  # warm-up: connections, pools, caches
    spent = await send_pings(port, pings, n)
    print(f"{scenario}: {spent / n * 1e6:.1f} µs CPU per ping ({n} pings)")
    listener.close()
    await runner.cleanup()
    buyers.close()
    sim.close_connections()


if __name__ == "__main__":
    with open("/dev/null", "w") as sink:
        sys.stderr = sink
        logs.setup("info")
        logging.getLogger("pingpost.buyers").setLevel(logging.WARNING)
        books = "none" if sys.argv[3:] == ["none"] else "sqlite:///{work}/ledger.db"
        uvloop.run(main(sys.argv[1], int(sys.argv[2]), books))
