"""Prometheus metrics of one worker.

Labels are campaign ids and outcome kinds only: never anything taken from a lead.
Outcomes are folded to a closed set (``error:http_500`` counts as ``error``) so a buyer
cannot grow the label space by answering oddly.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def outcome_kind(outcome: str) -> str:
    """``error:tls`` -> ``error``, ``filtered:states`` -> ``filtered``, ``bid`` -> ``bid``."""
    return outcome.split(":", 1)[0]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.auction_seconds = Histogram("pingpost_auction_seconds", "Ping auction time as the seller sees it.",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.post_seconds = Histogram("pingpost_post_seconds", "Post cascade time.", buckets=_LATENCY_BUCKETS,
                                      registry=r)
        self.pings = Counter("pingpost_pings", "Pings answered, by result.", ["status"], registry=r)
        self.campaign_pings = Counter("pingpost_campaign_pings", "Buyer pings by campaign and outcome "
                                      "(bid, no_bid, timeout, error, below_min_bid).",
                                      ["campaign", "outcome"], registry=r)
        self.posts = Counter("pingpost_posts", "Post offers by campaign and outcome (accepted, rejected).",
                             ["campaign", "outcome"], registry=r)
        self.leads = Counter("pingpost_leads", "Posts answered, by result (sold, unsold).", ["status"], registry=r)
        self.inflight = Gauge("pingpost_inflight", "Seller requests being handled now.", registry=r)
        self.rejected_requests = Counter("pingpost_refused_requests", "Seller requests refused, by error code.",
                                         ["code"], registry=r)

        # Label children looked up once and kept: ``labels()`` hashes, validates and locks on
        # every call, which the hot path paid once per buyer per ping. Children are still
        # made on first use, so /metrics shows the same series as before.
        self._bound: dict[tuple[object, ...], Any] = {}

    def _child(self, counter: Counter, *labels: str) -> Any:
        key = (counter, *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = counter.labels(*labels)
        return child

    def campaign_outcome(self, campaign_id: str, outcome: str) -> None:
        self._child(self.campaign_pings, campaign_id, outcome_kind(outcome)).inc()

    def post_outcome(self, campaign_id: str, outcome: str) -> None:
        self._child(self.posts, campaign_id, outcome_kind(outcome)).inc()

    def ping_answered(self, status: str) -> None:
        self._child(self.pings, status).inc()

    def post_answered(self, status: str) -> None:
        self._child(self.leads, status).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
