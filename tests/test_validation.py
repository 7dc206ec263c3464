"""Contract section 2 (fields, errors) and 7 (unknown fields, malformed bodies, the error shape).

A data-driven table of bad inputs with their exact status, code and field path, then the
transport-level refusals (content type, size, routes, methods), then hypothesis throwing
random documents and bytes at the three seller endpoints: never a 5xx, always the shape.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from typing import Any, Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pingpost.config import from_dict
from pingpost.normalize import PII_KEYS
from pingpost.server import make_app
from pingpost.store.memory import MemoryStore
from tests.support.buyers import BuyerServer, accept, bid
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config
from tests.helpers_contract import assert_error, assert_error_shape, chunks, ping_ok, raw

HEX = "ab" * 32
PING_ROUTE, POST_ROUTE, DIRECT_ROUTE = "/v1/ping", "/v1/post", "/v1/leads"


def p(**changes: Any) -> dict[str, Any]:
    out = {**PING, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def post(lead: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {"ping_id": "abc123", "lead": LEAD if lead is None else lead, **top}


def direct(lead: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    return {**p(**changes), "lead": LEAD if lead is None else lead}


def l(**changes: Any) -> dict[str, Any]:
    out = {**LEAD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


Row = tuple[str, Any, str, str]  # route, JSON body, code, path

ROWS: list[Row] = [
    # Unknown fields at every level.
    (PING_ROUTE, p(colour="red"), "validation_error", "colour"),
    (PING_ROUTE, p(lead=LEAD), "validation_error", "lead"),
    (POST_ROUTE, post(extra=1), "validation_error", "extra"),
    (POST_ROUTE, post(l(colour="red")), "validation_error", "lead.colour"),
    (DIRECT_ROUTE, {**direct(), "extra": True}, "validation_error", "extra"),
    (DIRECT_ROUTE, direct(l(colour="red")), "validation_error", "lead.colour"),
    # Required fields.
    (PING_ROUTE, p(vertical=...), "validation_error", "vertical"),
    (PING_ROUTE, p(zip=...), "validation_error", "zip"),
    (POST_ROUTE, {"lead": LEAD}, "validation_error", "ping_id"),
    (POST_ROUTE, {"ping_id": "abc"}, "validation_error", "lead"),
    (POST_ROUTE, post(l(zip=...)), "validation_error", "lead.zip"),
    (DIRECT_ROUTE, p(), "validation_error", "lead"),
    (DIRECT_ROUTE, direct(zip=...), "validation_error", "zip"),
    # vertical: 1-64 of a-z0-9_
    (PING_ROUTE, p(vertical=""), "validation_error", "vertical"),
    (PING_ROUTE, p(vertical="Auto"), "validation_error", "vertical"),
    (PING_ROUTE, p(vertical="auto-ins"), "validation_error", "vertical"),
    (PING_ROUTE, p(vertical="a" * 65), "validation_error", "vertical"),
    (PING_ROUTE, p(vertical="auto\n"), "validation_error", "vertical"),
    (PING_ROUTE, p(vertical=7), "validation_error", "vertical"),
    (POST_ROUTE, post(l(vertical="AUTO")), "validation_error", "lead.vertical"),
    # zip
    (PING_ROUTE, p(zip="9021"), "validation_error", "zip"),
    (PING_ROUTE, p(zip="902100"), "validation_error", "zip"),
    (PING_ROUTE, p(zip="90210-12"), "validation_error", "zip"),
    (PING_ROUTE, p(zip="90210 1234"), "validation_error", "zip"),
    (PING_ROUTE, p(zip="abcde"), "validation_error", "zip"),
    (PING_ROUTE, p(zip="90210\n"), "validation_error", "zip"),
    (PING_ROUTE, p(zip=90210), "validation_error", "zip"),
    (DIRECT_ROUTE, direct(l(zip="1234")), "validation_error", "lead.zip"),
    # state
    (PING_ROUTE, p(state="C"), "validation_error", "state"),
    (PING_ROUTE, p(state="CAL"), "validation_error", "state"),
    (PING_ROUTE, p(state="ZZ"), "validation_error", "state"),
    (PING_ROUTE, p(state="C1"), "validation_error", "state"),
    (PING_ROUTE, p(state="ca\n"), "validation_error", "state"),
    (PING_ROUTE, p(state=None), "validation_error", "state"),
    (DIRECT_ROUTE, direct(state="XX"), "validation_error", "state"),
    # short texts
    (PING_ROUTE, p(source_id="s" * 65), "validation_error", "source_id"),
    (PING_ROUTE, p(sub_id="s" * 65), "validation_error", "sub_id"),
    (PING_ROUTE, p(source_id=5), "validation_error", "source_id"),
    # quality_score 0-100 integer
    (PING_ROUTE, p(quality_score=-1), "validation_error", "quality_score"),
    (PING_ROUTE, p(quality_score=101), "validation_error", "quality_score"),
    (PING_ROUTE, p(quality_score=50.5), "validation_error", "quality_score"),
    (PING_ROUTE, p(quality_score="50"), "validation_error", "quality_score"),
    (PING_ROUTE, p(quality_score=True), "validation_error", "quality_score"),
    (DIRECT_ROUTE, direct(quality_score=1000), "validation_error", "quality_score"),
    # tcpa_consent
    (PING_ROUTE, p(tcpa_consent="yes"), "validation_error", "tcpa_consent"),
    (PING_ROUTE, p(tcpa_consent=1), "validation_error", "tcpa_consent"),
    # sha256
    (PING_ROUTE, p(email_sha256="g" * 64), "validation_error", "email_sha256"),
    (PING_ROUTE, p(email_sha256=HEX[:63]), "validation_error", "email_sha256"),
    (PING_ROUTE, p(email_sha256=HEX + "a"), "validation_error", "email_sha256"),
    (PING_ROUTE, p(email_sha256=HEX + "\n"), "validation_error", "email_sha256"),
    (PING_ROUTE, p(phone_sha256="z" * 64), "validation_error", "phone_sha256"),
    (PING_ROUTE, p(phone_sha256=""), "validation_error", "phone_sha256"),
    # timeout_ms
    (PING_ROUTE, p(timeout_ms=0), "validation_error", "timeout_ms"),
    (PING_ROUTE, p(timeout_ms=-5), "validation_error", "timeout_ms"),
    (PING_ROUTE, p(timeout_ms="100"), "validation_error", "timeout_ms"),
    (PING_ROUTE, p(timeout_ms=1.5), "validation_error", "timeout_ms"),
    (DIRECT_ROUTE, direct(timeout_ms=0), "validation_error", "timeout_ms"),
    # post ping_id
    (POST_ROUTE, post(ping_id=""), "validation_error", "ping_id"),
    (POST_ROUTE, post(ping_id=5), "validation_error", "ping_id"),
    (POST_ROUTE, post(ping_id="x" * 65), "validation_error", "ping_id"),
    (POST_ROUTE, {"ping_id": "abc", "lead": "not an object"}, "validation_error", "lead"),
    (POST_ROUTE, post(l(consent_cert_url="https://x.example\n")), "validation_error", "lead.consent_cert_url"),
    # Not an object at all.
    (PING_ROUTE, [], "validation_error", "$"),
    (PING_ROUTE, "ping", "validation_error", "$"),
    (POST_ROUTE, None, "validation_error", "$"),
    (DIRECT_ROUTE, 42, "validation_error", "$"),
]

# Attributes: a bad value is named by its key; a bad key or size names the attributes object.
ATTRIBUTE_ROWS: list[tuple[str, Any, str]] = [
    (PING_ROUTE, p(attributes={"k": None}), "attributes.k"),
    (PING_ROUTE, p(attributes={"k": "ok", "n": None}), "attributes.n"),
    (PING_ROUTE, p(attributes={"k": [1, None]}), "attributes.k[1]"),
    (PING_ROUTE, p(attributes={"k": {"nested": 1}}), "attributes.k"),
    (PING_ROUTE, p(attributes={"k": [[1]]}), "attributes.k[0]"),
    (PING_ROUTE, p(attributes={f"k{i}": i for i in range(65)}), "attributes"),
    (PING_ROUTE, p(attributes={"": 1}), "attributes"),
    (PING_ROUTE, p(attributes={"k" * 65: 1}), "attributes"),
    (PING_ROUTE, p(attributes=[1, 2]), "attributes"),
    (PING_ROUTE, p(attributes=None), "attributes"),
    (POST_ROUTE, post(l(attributes={"k": None})), "lead.attributes.k"),
    (POST_ROUTE, post(l(attributes={f"k{i}": i for i in range(65)})), "lead.attributes"),
    (DIRECT_ROUTE, direct(attributes={"k": None}), "attributes.k"),
    (DIRECT_ROUTE, direct(l(attributes={"k": {"x": 1}})), "lead.attributes.k"),
]

PII_ROWS: list[tuple[str, Any, str]] = (
    [(route, {**p(), key: "x"}, key) for key in sorted(PII_KEYS) for route in (PING_ROUTE,)]
    + [(PING_ROUTE, p(attributes={key: "x", "fine": 1}), f"attributes.{key}") for key in sorted(PII_KEYS)]
    + [(DIRECT_ROUTE, {**direct(), key: "x"}, key) for key in sorted(PII_KEYS)]
    + [(DIRECT_ROUTE, direct(attributes={key: 1}), f"attributes.{key}") for key in sorted(PII_KEYS)]
    # PII wins over other problems of the same ping, and is found in any value type.
    + [(PING_ROUTE, {**p(zip="bad"), "email": "a@b.co"}, "email"),
       (PING_ROUTE, {**p(), "phone": None}, "phone"),
       (PING_ROUTE, p(attributes={"dob": None}), "attributes.dob"),
       (PING_ROUTE, p(attributes={"ip_address": {"v": 4}}), "attributes.ip_address")]
)


class ThreadedExchange:
    """The real exchange and buyer server on their own loop in a thread.

    One server serves the whole module: the tables below have hundreds of rows, and sync
    hypothesis tests cannot share pytest-asyncio's loop. Requests go over plain sockets.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.ping_ids: list[str] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.buyers = BuyerServer()
        await self.buyers.start()
        self.buyers.script("c1", ping=bid(2), post=accept())
        config = base_config(self.buyers, {"id": "c1"}, {"id": "c2", "ping_url": None, "fixed_price": 1},
                             auction_timeout_ms=300, post_timeout_ms=500)
        self.runner = web.AppRunner(make_app(from_dict(config), MemoryStore()), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.run(self.buyers.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def buyer_calls(self) -> int:
        return sum(map(len, self.buyers.pings.values())) + sum(map(len, self.buyers.posts.values()))

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = "application/json",
                chunked: bool = False) -> tuple[int, str, bytes]:
        headers = {"Authorization": f"Bearer {SELLER_KEY}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
            body = [body[i:i + 8192] for i in range(0, len(body), 8192)]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            conn.close()

    def send(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
        return self.request("POST", path, body, content_type)


@pytest.fixture(scope="module")
def live() -> Iterator[ThreadedExchange]:
    server = ThreadedExchange()
    server.start()
    for _ in range(4):
        status, _, data = server.send(PING_ROUTE, json.dumps(PING).encode())
        assert status == 200
        server.ping_ids.append(json.loads(data)["ping_id"])
    yield server
    server.stop()


def refused(live: ThreadedExchange, route: str, body: bytes, code: str, method: str = "POST",
            content_type: str | None = "application/json", chunked: bool = False) -> dict[str, Any]:
    """Send a bad request: the contract's error with this code, as JSON, and no buyer called."""
    calls = live.buyer_calls()
    status, got_type, data = live.request(method, route, body, content_type, chunked)
    assert got_type.startswith("application/json"), (status, got_type)
    answer = json.loads(data)
    assert_error(status, answer, code)
    assert live.buyer_calls() == calls, "a refused request reached a buyer"
    return answer


@pytest.mark.parametrize("route,body,code,path", ROWS)
def test_bad_field_is_refused_with_its_path(live, route, body, code, path):
    answer = refused(live, route, json.dumps(body).encode(), code)
    assert [f["path"] for f in answer["error"]["fields"]][:1] == [path], answer


@pytest.mark.parametrize("route,body,path", ATTRIBUTE_ROWS)
def test_bad_attributes_are_refused(live, route, body, path):
    answer = refused(live, route, json.dumps(body).encode(), "validation_error")
    assert [f["path"] for f in answer["error"]["fields"]] == [path], answer


@pytest.mark.parametrize("route,body,path", PII_ROWS)
def test_personal_data_in_a_ping_is_pii_in_ping(live, route, body, path):
    answer = refused(live, route, json.dumps(body).encode(), "pii_in_ping")
    assert path in [f["path"] for f in answer["error"]["fields"]], answer


async def test_attributes_limits_that_pass(buyers, exchange):
    buyers.script("c1", ping=bid(1))
    ex = await exchange(base_config(buyers, {"id": "c1"}))
    attributes = {f"k{i}": i for i in range(62)} | {"list": ["a", 1, 2.5, True], "flag": False}
    answer = await ping_ok(ex, p(attributes=attributes))
    assert answer["status"] == "bid"
    assert buyers.pings["c1"][0].body["attributes"] == attributes


# Malformed bodies, media types, sizes, routes, methods -----------------------------------------

MALFORMED = [b"", b"   ", b"{", b'{"vertical": "auto",}', b"{'vertical': 'auto'}", b"\xff\xfe\x00",
             b'{"vertical":"a\xff","zip":"90210"}', b'{"vertical":"auto","zip":"9021\xc3"}', b"NaN",
             b'{"vertical":"auto","zip":"90210"} trailing', "{\"vertical\":\"auto\"}".encode("utf-16"),
             b'{"vertical":"auto","zip":"90210","x":"\xed\xa0\x80"}']
ROUTES = [PING_ROUTE, POST_ROUTE, DIRECT_ROUTE]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", MALFORMED)
def test_body_that_is_not_utf8_json_is_400(live, route, body):
    refused(live, route, body, "malformed_json")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/json",
                                          "application/jsonx", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("route", ROUTES)
def test_wrong_content_type_is_415(live, route, content_type):
    refused(live, route, json.dumps(PING).encode(), "unsupported_media_type", content_type=content_type)


def test_json_content_type_with_charset_is_accepted(live):
    status, _, data = live.request("POST", PING_ROUTE, json.dumps(PING).encode(), "application/json; charset=utf-8")
    assert status == 200 and json.loads(data)["status"] == "bid"


def _padded(size: int) -> bytes:
    body = json.dumps(PING).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_body_over_64_kib_is_413(live, route, chunked):
    refused(live, route, _padded(64 * 1024 + 1), "payload_too_large", chunked=chunked)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_body_of_exactly_64_kib_is_read(live, chunked):
    status, _, answer = live.request("POST", PING_ROUTE, _padded(64 * 1024), chunked=chunked)
    assert status == 200 and json.loads(answer)["status"] == "bid"


async def test_413_over_aiohttp_chunked_upload(buyers, exchange):
    ex = await exchange(base_config(buyers))
    status, content_type, data = await raw(ex, "POST", PING_ROUTE, data=chunks(_padded(64 * 1024 + 1)),
                                           headers={"Content-Type": "application/json"})
    assert content_type == "application/json"
    assert_error(status, json.loads(data), "payload_too_large")


@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("POST", "/v1/pingx"), ("GET", "/v1/pings/"),
                                         ("POST", "/v2/ping"), ("GET", "/v1/pings/a/b"), ("GET", "/")])
def test_unknown_route_is_404_json(live, method, path):
    refused(live, path, None, "not_found", method=method, content_type=None)


@pytest.mark.parametrize("method,path", [("GET", PING_ROUTE), ("PUT", POST_ROUTE), ("DELETE", DIRECT_ROUTE),
                                         ("POST", "/v1/pings/abc"), ("PATCH", PING_ROUTE), ("POST", "/healthz")])
def test_wrong_method_is_a_json_4xx(live, method, path):
    status, content_type, data = live.request(method, path, b"{}")
    assert 400 <= status < 500 and content_type.startswith("application/json")
    assert_error_shape(json.loads(data))


# Hypothesis: nothing a client sends gives a 5xx ------------------------------------------------


def check_answer(status: int, content_type: str, data: bytes) -> None:
    assert status < 500, (status, data)
    assert content_type.startswith("application/json"), (status, content_type)
    answer = json.loads(data)
    if status >= 300:
        assert_error_shape(answer)
    if status == 422 and answer["error"]["code"] == "validation_error":
        # Every bad field named, in a seller's words: never the decoder's regexes or type names.
        assert answer["error"]["fields"], answer
        for field in answer["error"]["fields"]:
            assert field["message"].startswith(("must be ", "is required", "is not ")), answer
            assert "`" not in field["message"] and "regex" not in field["message"], answer


scalars = st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80)
documents = st.recursive(scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids,
                                                                                            max_size=5), max_leaves=20)
PING_KEYS = ["vertical", "zip", "state", "source_id", "sub_id", "quality_score", "tcpa_consent", "email_sha256",
             "phone_sha256", "attributes", "timeout_ms", "email", "phone", "dob", "lead", "x"]
LEAD_KEYS = ["first_name", "last_name", "email", "phone", "zip", "state", "address", "city", "ip_address", "dob",
             "consent_cert_url", "attributes", "vertical", "quality_score", "y"]
GOOD = {**PING, **LEAD, "attributes": {"a": 1}, "dob": "1990-01-01", "ip_address": "10.0.0.1",
        "consent_cert_url": "https://c.example/x", "timeout_ms": 200, "source_id": "s", "tcpa_consent": True}


def near_valid(keys: list[str], base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects built from the real field names, each value good or random."""
    value_for = {k: st.just(base[k]) | documents if k in base else documents for k in keys}
    return st.fixed_dictionaries({}, optional=value_for)


ping_docs = near_valid(PING_KEYS, GOOD) | documents
lead_docs = near_valid(LEAD_KEYS, GOOD) | documents
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)


@SETTINGS
@given(ping_docs)
def test_random_ping_documents_never_5xx(live, doc):
    check_answer(*live.send(PING_ROUTE, json.dumps(doc).encode()))


@SETTINGS
@given(st.one_of(st.sampled_from(["unknown"]), st.text(max_size=70)), lead_docs, st.data())
def test_random_post_documents_never_5xx(live, ping_id, lead, data):
    ping_id = data.draw(st.sampled_from(live.ping_ids) | st.just(ping_id))
    doc = data.draw(st.just({"ping_id": ping_id, "lead": lead}) | documents)
    check_answer(*live.send(POST_ROUTE, json.dumps(doc).encode()))


@SETTINGS
@given(ping_docs, lead_docs)
def test_random_direct_documents_never_5xx(live, top, lead):
    doc = {**top, "lead": lead} if isinstance(top, dict) else top
    check_answer(*live.send(DIRECT_ROUTE, json.dumps(doc).encode()))


@SETTINGS
@given(st.sampled_from([PING_ROUTE, POST_ROUTE, DIRECT_ROUTE]), st.binary(max_size=300),
       st.sampled_from([b"", b'{"vertical":"', b'{"ping_id":"', b'{"zip":"90210","vertical":"auto","attributes":{"']),
       st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1"]))
def test_random_bytes_never_5xx(live, route, body, prefix, content_type):
    check_answer(*live.send(route, prefix + body, content_type))
