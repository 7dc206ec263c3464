"""The OpenAPI 3.1 document and schemathesis against a live exchange.

The document is built from the same msgspec Structs that decode requests, so it is loaded
at import (``document()``) to parametrize the fuzz tests, and checked to be exactly what
``GET /openapi.json`` serves. Schemathesis then sends valid and invalid requests to every
operation of a live exchange (with a real buyer behind it): no answer may be a 5xx, and
every answer must be one the document describes (status, content type, body shape).
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
import threading
from typing import Any, Iterator

import msgspec
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from pingpost import ledger
from pingpost.config import from_dict
from pingpost.errors import Code
from pingpost.openapi import document
from pingpost.schema import DirectPostRequest, PingRequest, PingResponse, PostRequest, PostResponse
from pingpost.store.memory import MemoryStore
from tests.support.buyers import BuyerServer, accept, bid
from tests.support.exchange import LEAD, PING, SELLER_KEY, RunningExchange, base_config
from tests.support.keys import TEST_KEY

AUTH = {"Authorization": f"Bearer {SELLER_KEY}"}
BUYER_AUTH = {"Authorization": "Bearer fuzz-buyer-key"}
OPERATOR_AUTH = {"Authorization": "Bearer fuzz-operator-key"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_dict(
    document(), config=schemathesis.Config.from_dict({"generation": {"mode": "all"}}))


class LiveExchange:
    """The real app and a scripted buyer on an event loop in a thread (schemathesis is sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.buyers = BuyerServer()
        self.exchange: RunningExchange | None = None
        self.folder = tempfile.mkdtemp(prefix="pp-openapi-")

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> str:
        self.thread.start()
        self.run(self.buyers.start())
        self.buyers.script("c1", ping=bid(2.0), post=accept())
        self.buyers.script("c2", ping=bid(1.0), post=accept())
        config = base_config(self.buyers, {"id": "c1"}, {"id": "c2", "buyer": "b2", "vertical": "home"},
                             {"id": "fixed", "buyer": "b3", "ping_url": None, "fixed_price": 0.5},
                             auction_timeout_ms=300, post_timeout_ms=1000)
        config["buyers"][0]["api_keys"] = [BUYER_AUTH["Authorization"].split()[1]]
        config["operators"] = [{"id": "ops", "api_keys": [OPERATOR_AUTH["Authorization"].split()[1]]}]
        # Real books, so that every operation (the privacy requests too) answers from them.
        books = self.run(ledger.open(f"sqlite:///{self.folder}/books.db", key=TEST_KEY))
        self.exchange = RunningExchange(from_dict(copy.deepcopy(config)), MemoryStore(), None, ledger=books)
        self.run(self.exchange.start())
        return self.exchange.url

    def stop(self) -> None:
        if self.exchange is not None:
            self.run(self.exchange.stop())
        self.run(self.buyers.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    server = LiveExchange()
    try:
        yield server.start()
    finally:
        server.stop()


def test_served_document_is_the_generated_one(live):
    response = requests.get(live + "/openapi.json", timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    assert served == msgspec.json.decode(msgspec.json.encode(document()))
    assert served["openapi"].startswith("3.1")
    _, components = msgspec.json.schema_components(
        [PingRequest, PostRequest, DirectPostRequest, PingResponse, PostResponse],
        ref_template="#/components/schemas/{name}")
    for name, struct_schema in components.items():
        assert served["components"]["schemas"][name] == struct_schema, f"{name} drifted from its Struct"
    # The document loads and validates as OpenAPI 3.1.
    loaded = schemathesis.openapi.from_url(live + "/openapi.json")
    assert {op.ok().path for op in loaded.get_all_operations()} >= {"/v1/ping", "/v1/post", "/v1/leads"}


def test_each_error_answer_names_the_codes_of_its_status():
    """Every error answer of every operation is the error shape with a ``code`` from the
    table answered with that status, and names all of them (so the fuzz tests below also
    check that a 404 says ``not_found``, a 409 ``post_in_progress`` or ``no_bid``, ...)."""
    statuses = {str(code.status) for code in Code}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status == "200":
                    continue
                assert status in statuses, (path, method, status)
                whole, narrowed = answer["content"]["application/json"]["schema"]["allOf"]
                assert whole == {"$ref": "#/components/schemas/ErrorResponse"}
                codes = narrowed["properties"]["error"]["properties"]["code"]["enum"]
                assert codes == [code.value for code in Code if str(code.status) == status], (path, method, status)
                assert all(code in answer["description"] for code in codes)


def test_documented_answers_match_real_ones(live):
    """The hand-picked answers of each kind validate against the document too."""
    examples: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", "/v1/ping", PING, AUTH),
        ("POST", "/v1/ping", {**PING, "vertical": "nothing"}, AUTH),
        ("POST", "/v1/ping", {**PING, "email": "a@b.c"}, AUTH),
        ("POST", "/v1/ping", PING, {}),
        ("POST", "/v1/post", {"ping_id": "nope", "lead": LEAD}, AUTH),
        ("POST", "/v1/leads", {**PING, "lead": LEAD}, AUTH),
        ("GET", "/v1/pings/{ping_id}", None, AUTH),
        ("GET", "/healthz", None, {}),
        ("GET", "/metrics", None, {}),
        ("GET", "/openapi.json", None, {}),
    ]
    answered = requests.post(live + "/v1/ping", json=PING, headers=AUTH, timeout=5).json()
    assert answered["status"] == "bid"
    examples += [
        ("POST", "/v1/post", {"ping_id": answered["ping_id"], "lead": {**LEAD, "zip": "10001"}}, AUTH),
        ("POST", "/v1/post", {"ping_id": answered["ping_id"], "lead": LEAD}, AUTH),
        ("GET", "/v1/pings/{ping_id}", None, AUTH),
    ]
    no_bid = requests.post(live + "/v1/ping", json={**PING, "vertical": "nothing"}, headers=AUTH, timeout=5).json()
    examples.append(("POST", "/v1/post", {"ping_id": no_bid["ping_id"], "lead": LEAD}, AUTH))
    seen: set[tuple[str, str]] = set()
    statuses: list[int] = []
    for method, path, body, headers in examples:
        operation = schema[path][method]
        ping_id = "nope" if ("GET", path) not in seen else answered["ping_id"]
        seen.add((method, path))
        params = {"ping_id": ping_id} if "{ping_id}" in path else None
        case = operation.Case(body=body, path_parameters=params) if body is not None else \
            operation.Case(path_parameters=params)
        response = case.call(base_url=live, headers=headers, timeout=5)
        assert response.status_code < 500
        case.validate_response(response, checks=CHECKS, headers=headers)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 422, 401, 404, 200, 404, 200, 200, 200, 422, 200, 200, 409]


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz(case, live):
    case.call_and_validate(base_url=live, headers=AUTH, checks=CHECKS, timeout=5)


@schema.include(path_regex="^/v1/(buyer|returns|privacy)").parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_the_buyers_and_operators_endpoints_with_their_keys(case, live):
    headers = OPERATOR_AUTH if case.path.startswith(("/v1/returns/", "/v1/privacy/")) else BUYER_AUTH
    case.call_and_validate(base_url=live, headers=headers, checks=CHECKS, timeout=5)
