"""Locust sellers for any pingpost deployment (docs/performance.md, "Locust").

Each simulated seller pings; a share of the pings that got a bid is then posted, and a
share of the leads go as direct posts. Every answer slower than its budget is marked as a
failure, whatever its status: a ping slower than the auction budget, a post slower than
the post budget, a direct post slower than the two together. So the failure ratio is the share of sellers that did
not get the contract's answer in time.

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8080

Settings (environment):
  PINGPOST_API_KEY        seller API key (required)
  PINGPOST_BUDGET_MS      auction budget a ping answer must beat (default 1000, the default auction_timeout_ms)
  PINGPOST_POST_BUDGET_MS budget of a post or direct post (default 10000, the default post_timeout_ms)
  PINGPOST_POST_SHARE     share of bid pings that are posted (default 0.3)
  PINGPOST_DIRECT_SHARE   share of leads sent as direct posts instead (default 0.1)
  PINGPOST_VERTICALS      comma-separated verticals to ping (default auto_insurance; see engine/sim/traffic.py)
  PINGPOST_SEED           seed of the generated leads (default: random)
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from locust import FastHttpUser, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pingpost.sim.traffic import Generator, Sample  # noqa: E402

API_KEY = os.environ.get("PINGPOST_API_KEY", "")
BUDGET_S = float(os.environ.get("PINGPOST_BUDGET_MS", "1000")) / 1000
POST_BUDGET_S = float(os.environ.get("PINGPOST_POST_BUDGET_MS", "10000")) / 1000
POST_SHARE = float(os.environ.get("PINGPOST_POST_SHARE", "0.3"))
DIRECT_SHARE = float(os.environ.get("PINGPOST_DIRECT_SHARE", "0.1"))
VERTICALS = [v.strip() for v in os.environ.get("PINGPOST_VERTICALS", "auto_insurance").split(",") if v.strip()]
SEED = os.environ.get("PINGPOST_SEED")

if not API_KEY:
    raise SystemExit("bench/locustfile.py: set PINGPOST_API_KEY to a seller's API key")


class Seller(FastHttpUser):
    """One seller: ping, maybe post the bid ping; or a direct post."""

    def on_start(self) -> None:
        seed = None if SEED is None else int(SEED) + id(self) % 10_000
        self.generator = Generator(seed, verticals=VERTICALS)
        self.rng = random.Random(seed)
        self.headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def _call(self, name: str, path: str, body: dict, budget_s: float) -> dict | None:
        started = time.perf_counter()
        with self.client.post(path, json=body, headers=self.headers, name=name, catch_response=True) as response:
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return None
            if elapsed > budget_s:
                response.failure(f"slower than the budget ({elapsed * 1000:.0f} ms > {budget_s * 1000:.0f} ms)")
                return None
            try:
                answer = response.json()
            except ValueError:
                response.failure("not JSON")
                return None
            response.success()
            return answer

    @task
    def lead(self) -> None:
        sample: Sample = self.generator.sample()
        if self.rng.random() < DIRECT_SHARE:
            self._call("/v1/leads", "/v1/leads", sample.direct(), BUDGET_S + POST_BUDGET_S)
            return
        answer = self._call("/v1/ping", "/v1/ping", sample.ping, BUDGET_S)
        if answer and answer.get("status") == "bid" and self.rng.random() < POST_SHARE:
            self._call("/v1/post", "/v1/post", {"ping_id": answer["ping_id"], "lead": sample.lead}, POST_BUDGET_S)
