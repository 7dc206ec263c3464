"""What one ``RedisStore.refresh`` costs as the campaign count grows (docs/store.md, "Cost").

Run: ``.venv/bin/python bench/refresh_cost.py`` (starts its own redis-server and a
three-master cluster on free ports, like the tests). Prints the median wall time of a
refresh for each campaign set, on one Redis and on the cluster. The sets with offered
campaigns rank by ``expected``: that many campaigns have offers counted in the current slice
and the one before, and ``NEW_OFFERS`` more are counted (untimed) before each timed refresh,
as 250 offers a second would between two refreshes.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pingpost.config import Campaign, Caps, ExchangeSettings  # noqa: E402
from pingpost.store.redis import RedisStore  # noqa: E402
from tests.redis_support import RedisClusterServers, RedisServer  # noqa: E402
from tests.test_store_contract import record  # noqa: E402

SETS = ((1_000, 20, 0), (10_000, 20, 0), (10_000, 1_000, 0), (1_000, 20, 1_000), (10_000, 20, 1_000),
        (10_000, 20, 10_000))
"""(campaigns, how many of them have a cap, how many had offers in this slice and the last)."""
RUNS = 50
NEW_OFFERS = 50


def campaigns(n: int, capped: int) -> list[Campaign]:
    return [Campaign(id=f"c{i}", buyer="b1", vertical="auto", post_url="http://127.0.0.1:9/post",
                     caps=Caps(daily=100) if i < capped else Caps()) for i in range(n)]


async def median_ms(url: str, n: int, capped: int, offered: int) -> float:
    """A worker whose own refresh task stays asleep, so only the timed calls run; some
    campaigns carry counts and a bench so the view has something to show."""
    store = RedisStore(url)
    store.refresh_s = 3600
    ranking = "expected" if offered else "bid"
    await store.start(campaigns(n, capped), ExchangeSettings(bench_after_timeouts=1, ranking=ranking))
    try:
        for i in range(0, capped, 2):
            await store.reserve(f"c{i}", 100, time.time())
        slice_s = store.accepts.rule.slice_ms / 1000
        for at in (time.time() - slice_s, time.time()):
            for first in range(0, offered, 1_000):  # a pipeline at a time that the cluster client sends in time
                await asyncio.gather(*(store.count_offer(f"p{at}", f"c{i}", i % 3 > 0, at)
                                       for i in range(first, min(first + 1_000, offered))))
        await store.refresh()
        await store.save_ping(record("slow"), 60, [f"c{n - 1}", f"c{n - 2}"], [(f"c{n - 1}", 5)])
        times = []
        for run in range(RUNS):
            if offered:
                await asyncio.gather(*(store.count_offer(f"q{run}", f"c{i}", i % 2 > 0, time.time())
                                       for i in range(0, offered, offered // NEW_OFFERS)))
            started = time.perf_counter()
            await store.refresh()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        await store.close()


async def main() -> None:
    single, cluster = RedisServer().start(), RedisClusterServers().start()
    try:
        print("campaigns  capped  offered  single Redis  3-master cluster  (median ms per refresh)")
        for n, capped, offered in SETS:
            results = []
            for servers in (single, cluster):
                servers.flush()
                results.append(await median_ms(servers.url, n, capped, offered))
            print(f"{n:>9,}  {capped:>6,}  {offered:>7,}  {results[0]:>12.1f}  {results[1]:>16.1f}")
    finally:
        single.remove()
        cluster.remove()


if __name__ == "__main__":
    asyncio.run(main())
