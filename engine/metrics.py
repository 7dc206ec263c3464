"""Prometheus metrics of one worker.

Labels are campaign ids and outcome kinds only: never anything taken from a lead.
Outcomes are folded to a closed set (``error:http_500`` counts as ``error``) so a buyer
cannot grow the label space by answering oddly.
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def outcome_kind(outcome: str) -> str:
    """``error:tls`` -> ``error``, ``filtered:states`` -> ``filtered``, ``bid`` -> ``bid``."""
    return outcome.partition(":")[0]


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
        self.ledger_backlog = Gauge("pingpost_ledger_backlog", "Records durable on this host but not yet in the "
                                    "shared ledger (PostgreSQL); 0 for SQLite.", registry=r)
        self.opt_outs_held = Gauge("pingpost_opt_outs_held", "Entries of the opt-out list this worker holds "
                                   "(every worker of every host holds the same within a second).", registry=r)

        # Label children looked up once and kept: ``labels()`` hashes, validates and locks on
        # every call, which the hot path paid once per buyer per ping. Children are still
        # made on first use, so /metrics shows the same series as before.
        self._bound: dict[tuple[object, ...], Any] = {}
        #: Buyer pings by (campaign, outcome) not yet in ``campaign_pings``: a plain count per
        #: buyer call (a locked child ``inc`` was most of a call's metrics cost), added to the
        #: counter whenever the metrics are read.
        self._buyer_pings: dict[tuple[str, str], int] = {}

    def _child(self, counter: Counter, *labels: str) -> Any:
        key = (counter, *labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = counter.labels(*labels)
        return child

    def campaign_outcome(self, campaign_id: str, outcome: str) -> None:
        pending = self._buyer_pings
        key = (campaign_id, outcome_kind(outcome))  # folded now: the keys are the closed set too
        pending[key] = pending.get(key, 0) + 1

    def post_outcome(self, campaign_id: str, outcome: str) -> None:
        self._child(self.posts, campaign_id, outcome_kind(outcome)).inc()

    def ping_answered(self, status: str) -> None:
        self._child(self.pings, status).inc()

    def post_answered(self, status: str) -> None:
        self._child(self.leads, status).inc()

    def watch_backlog(self, backlog: Callable[[], int]) -> None:
        """Read the ledger's backlog when scraped: it changes with every record and forward."""
        self.ledger_backlog.set_function(backlog)

    def watch_opt_outs(self, held: Callable[[], int]) -> None:
        """Read the size of the worker's opt-out list when scraped."""
        self.opt_outs_held.set_function(held)

    def render(self) -> bytes:
        pending, self._buyer_pings = self._buyer_pings, {}
        for (campaign_id, kind), count in pending.items():
            self._child(self.campaign_pings, campaign_id, kind).inc(count)
        return generate_latest(self.registry)
