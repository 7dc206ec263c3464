"""The load generator: seller traffic over the lean HTTP/1.1 client, closed or open loop,
and the figures of one measured run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import msgspec

from .. import http1
from ..sim.traffic import Generator
from .cpus import Layout
from .processes import cpu_seconds, finish_py_spy, process_tree, rss_mb, start_py_spy
from .report import _r, percentile
from .scenarios import API_KEY, BUYER_MS, VERTICAL, Scenario

REQUEST_TIMEOUT_S = 5.0


class PingAnswer(msgspec.Struct):
    status: str = ""
    ping_id: str | None = None
    auction_ms: float | None = None


class Load:
    """The seller side: pre-encoded pings over the lean keep-alive client, and what came back."""

    def __init__(self, s: Scenario, base_url: str, seed: int) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        self.ping_target = http1.Target.of(base_url + "/v1/ping", headers)
        self.post_target = http1.Target.of(base_url + "/v1/post", headers)
        self.client = http1.Client(None, 1 << 20)  # type: ignore[arg-type]  # plain http only
        generator = Generator(seed, verticals=[VERTICAL])
        self.samples = [generator.sample() for _ in range(1000)]
        self.pings = [msgspec.json.encode(x.ping) for x in self.samples]
        self.rng = random.Random(seed)
        self.scenario = s
        self.decode = msgspec.json.Decoder(PingAnswer).decode
        self.next = 0
        self.reset()

    def reset(self) -> None:
        self.latency: list[float] = []
        self.auction: list[float] = []
        self.post_latency: list[float] = []
        self.errors: dict[str, int] = {}
        self.outcomes: dict[str, int] = {}

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def _send(self, target: http1.Target, body: bytes) -> tuple[int, bytes] | None:
        """``(status, body)``, or None after counting the failure."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _, answer = await self.client.post(target, body, retry=False)
                return status, answer
        except TimeoutError:
            self._error("client:timeout")
        except (OSError, http1.ProtocolError, http1.TooLarge) as exc:
            self._error(f"client:{type(exc).__name__}")
        return None

    async def one(self, intended: float) -> None:
        """A ping (and maybe its post); latency counts from ``intended``."""
        n = self.next = (self.next + 1) % len(self.pings)
        answer = await self._send(self.ping_target, self.pings[n])
        if answer is None:
            return
        self.latency.append((time.perf_counter() - intended) * 1000)
        status, body = answer
        if status != 200:
            self._error(f"http_{status}")
            return
        try:
            ping = self.decode(body)
        except msgspec.DecodeError:
            self._error("bad_json")
            return
        if ping.auction_ms is not None:
            self.auction.append(ping.auction_ms)
        self.outcomes[ping.status] = self.outcomes.get(ping.status, 0) + 1
        if ping.status != "bid" or not self.scenario.post_share or self.rng.random() >= self.scenario.post_share:
            return
        body = msgspec.json.encode({"ping_id": ping.ping_id, "lead": self.samples[n].lead})
        started = time.perf_counter()
        answer = await self._send(self.post_target, body)
        if answer is None:
            return
        self.post_latency.append((time.perf_counter() - started) * 1000)
        if answer[0] != 200:
            self._error(f"post_http_{answer[0]}")
            return
        status_ = msgspec.json.decode(answer[1]).get("status", "?")
        self.outcomes["post_" + status_] = self.outcomes.get("post_" + status_, 0) + 1

    async def closed(self, concurrency: int, seconds: float) -> float:
        end = time.perf_counter() + seconds

        async def seller() -> None:
            while time.perf_counter() < end:
                await self.one(time.perf_counter())

        started = time.perf_counter()
        await asyncio.gather(*(seller() for _ in range(concurrency)))
        return time.perf_counter() - started

    async def open(self, rate: float, seconds: float) -> float:
        """Send at ``rate``; each request starts at its intended time (or as soon after as
        this loop can), and its latency counts from the intended time."""
        total = max(1, int(rate * seconds))
        interval = 1 / rate
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        n = 0
        while n < total:
            now = time.perf_counter()
            due = started + n * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while n < total and started + n * interval <= now:
                task = asyncio.create_task(self.one(started + n * interval))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
        if tasks:
            await asyncio.gather(*tasks)
        return time.perf_counter() - started


async def drive(s: Scenario, args: argparse.Namespace, layout: Layout, base_url: str, exchange_pid: int,
                buyers_pid: int, redis_pid: int | None) -> dict[str, Any]:
    load = Load(s, base_url, args.seed)
    try:
        warmup = args.warmup if args.warmup is not None else min(2.0, args.duration / 4)
        if warmup > 0:
            await load.closed(min(args.concurrency, 64), warmup)
        load.reset()
        exchange_pids = process_tree(exchange_pid)
        before = (cpu_seconds(exchange_pids), cpu_seconds([buyers_pid]), cpu_seconds([os.getpid()]),
                  cpu_seconds([redis_pid]) if redis_pid else 0.0)
        spy = start_py_spy(args, s, exchange_pids[-1], layout)
        if args.mode == "closed":
            wall = await load.closed(args.concurrency, args.duration)
        else:
            wall = await load.open(args.rate, args.duration)
        after = (cpu_seconds(exchange_pids), cpu_seconds([buyers_pid]), cpu_seconds([os.getpid()]),
                 cpu_seconds([redis_pid]) if redis_pid else 0.0)
        rss = [rss_mb(pid) for pid in exchange_pids[1:]] if args.workers > 1 else [rss_mb(exchange_pid)]
        if spy is not None:
            await asyncio.get_running_loop().run_in_executor(None, finish_py_spy, spy, args, s)
    finally:
        load.client.close()
    pings = sum(v for k, v in load.outcomes.items() if not k.startswith("post_"))
    posts = sum(v for k, v in load.outcomes.items() if k.startswith("post_"))
    exchange_cpu = after[0] - before[0]
    latency = sorted(load.latency)
    result: dict[str, Any] = {
        "scenario": s.name, "mode": args.mode, "offered_rate": args.rate if args.mode == "open" else None,
        "concurrency": args.concurrency if args.mode == "closed" else None, "workers": args.workers,
        "store": args.store, "wall_s": round(wall, 3), "pings": pings, "posts": posts,
        "pings_per_s": round(pings / wall, 1), "posts_per_s": round(posts / wall, 1),
        "errors": sum(load.errors.values()), "error_kinds": dict(load.errors), "outcomes": dict(load.outcomes),
        "cpu_us_per_ping": round(exchange_cpu / pings * 1e6, 1) if pings else None,
        "pings_per_core_s": round(pings / exchange_cpu, 1) if pings and exchange_cpu else None,
        "exchange_cpu": round(exchange_cpu / wall, 3), "buyers_cpu": round((after[1] - before[1]) / wall, 3),
        "loadgen_cpu": round((after[2] - before[2]) / wall, 3),
        "redis_cpu": round((after[3] - before[3]) / wall, 3) if redis_pid else None,
        "rss_mb": round(max(rss), 1), "rss_mb_total": round(sum(rss), 1),
    }
    for p in (50, 95, 99, 100):
        key = "max" if p == 100 else f"p{p}"
        value = percentile(latency, p)
        result[f"latency_{key}_ms"] = _r(value)
        result[f"overhead_{key}_ms"] = _r(None if value is None else value - BUYER_MS)
    auction, posts_ms = sorted(load.auction), sorted(load.post_latency)
    result["auction_p50_ms"], result["auction_p99_ms"] = _r(percentile(auction, 50)), _r(percentile(auction, 99))
    result["post_p50_ms"], result["post_p99_ms"] = _r(percentile(posts_ms, 50)), _r(percentile(posts_ms, 99))
    warnings = []
    if result["loadgen_cpu"] + result["buyers_cpu"] > 0.9:
        warnings.append(f"load generator ({result['loadgen_cpu']:.0%}) and buyers ({result['buyers_cpu']:.0%}) "
                        "are near one core: they may be the bottleneck")
    if args.mode == "open" and pings + result["errors"] < 0.97 * args.rate * args.duration:
        warnings.append("fewer requests were sent than offered")
    result["warnings"] = warnings
    return result
