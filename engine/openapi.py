"""The seller API as an OpenAPI 3.1 document, generated from the request/answer Structs
and the table of error codes (``errors.Code``)."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import Code
from .reports import Report
from .schema import (ConsumerRequest, DecisionRequest, DeletionAnswer, DirectPostRequest, ErrorResponse, Health,
                     LeadStatus, OptOutAnswer, OutcomeAnswer, OutcomeRequest, PingRequest, PingResponse, PingTrace,
                     PostRequest, PostResponse, PrivacyRequestList, PurchaseList, ReturnAnswer, ReturnList,
                     ReturnRequest)


def codes_by_status() -> dict[str, list[str]]:
    """Each status of the error table with its codes, in the table's order."""
    by_status: dict[str, list[str]] = {}
    for code in Code:
        by_status.setdefault(str(code.status), []).append(code.value)
    return by_status


def _either(codes: list[str]) -> str:
    return codes[0] if len(codes) == 1 else f"{', '.join(codes[:-1])} or {codes[-1]}"


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [PingRequest, PostRequest, DirectPostRequest, PingResponse, PostResponse, PingTrace, LeadStatus, Report,
         PurchaseList, ReturnRequest, ReturnAnswer, ReturnList, DecisionRequest, OutcomeRequest, OutcomeAnswer,
         ConsumerRequest, OptOutAnswer, DeletionAnswer, PrivacyRequestList, ErrorResponse, Health],
        ref_template="#/components/schemas/{name}")
    components["ErrorDetail"]["properties"]["code"]["enum"] = [code.value for code in Code]
    by_status = codes_by_status()

    def ref(struct: type) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{struct.__name__}"}

    def error(status: str) -> dict[str, Any]:
        """The error shape, its ``code`` one of those the table answers with this status."""
        codes = by_status[status]
        narrowed = {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}
        return {"description": _either(codes),
                "content": {"application/json": {"schema": {"allOf": [ref(ErrorResponse), narrowed]}}}}

    def answers(ok: type, codes: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ref(ok)}}}}
        for code in codes:
            out[code] = error(code)
        return out

    def post_op(summary: str, body: type, ok: type, codes: tuple[str, ...], path: str | None = None,
                required: bool = True) -> dict[str, Any]:
        """``path``: the name of the path's one parameter; ``required``: whether there must be a body."""
        operation: dict[str, Any] = {
            "summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": required, "content": {"application/json": {"schema": ref(body)}}},
            "responses": answers(ok, codes)}
        if path is not None:
            operation["parameters"] = [{"name": path, "in": "path", "required": True, "schema": {"type": "string"}}]
        return {"post": operation}

    def query_op(summary: str, ok: type, described: dict[str, str]) -> dict[str, Any]:
        """Query parameters as strings: the server checks them (422 names the parameter)."""
        return {"get": {
            "summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "parameters": [{"name": name, "in": "query", "required": False, "description": text,
                            "schema": {"type": "string"}} for name, text in described.items()],
            "responses": answers(ok, ("401", "403", "422", "503"))}}

    def get_op(summary: str, name: str, ok: type) -> dict[str, Any]:
        return {"get": {
            "summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": answers(ok, ("401", "403", "404", "503"))}}

    def report_op() -> dict[str, Any]:
        """Query parameters as strings: the server checks them (422 names the parameter)."""
        described = {"from": "first day, YYYY-MM-DD (default: today in tz)",
                     "to": "last day, inclusive, YYYY-MM-DD (default: today in tz, or from)",
                     "tz": "time zone name (default: the exchange's timezone)",
                     "group_by": "comma-separated dimensions: hour, day, seller, source, sub_id, vertical, state, "
                                 "buyer, campaign (each role its own)",
                     "test": "true adds test traffic", "format": "json (default) or csv"}
        answer = answers(Report, ("401", "403", "422", "503"))
        answer["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
        return {"get": {
            "summary": "The caller's numbers over days, from the rollups (each role its own scope and metrics)",
            "security": [{"bearer": []}, {"apiKey": []}],
            "parameters": [{"name": name, "in": "query", "required": False, "description": text,
                            "schema": {"type": "string"}} for name, text in described.items()],
            "responses": answer}}

    seller_errors = ("400", "401", "403", "408", "413", "415", "422", "503")
    pages = {"cursor": "the next_cursor of the page before", "limit": "items a page, 1 to 1000 (default 100)"}
    days = {"from": "first day, YYYY-MM-DD, in tz (default: no bound)",
            "to": "last day, inclusive, YYYY-MM-DD (default: no bound)",
            "tz": "time zone name (default: the exchange's timezone)"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pingpost seller API", "version": "1"},
        "paths": {
            "/v1/ping": post_op("Ping: ask the buyers for a price", PingRequest, PingResponse, seller_errors),
            "/v1/post": post_op("Post the full lead for a ping", PostRequest, PostResponse,
                                seller_errors + ("404", "409", "410")),
            "/v1/leads": post_op("Direct post: ping and post in one call", DirectPostRequest, PostResponse,
                                 seller_errors + ("409",)),
            "/v1/pings/{ping_id}": get_op("The per-lead trace of a ping: what each campaign did", "ping_id", PingTrace),
            "/v1/leads/{lead_id}": get_op("A sold lead as the books hold it: status, price, when", "lead_id",
                                          LeadStatus),
            "/v1/reports": report_op(),
            "/v1/buyer/leads": query_op("A buyer's purchases, newest first, each lead as it was posted", PurchaseList, {
                **days, **pages, "test": "true lists test purchases too"}),
            "/v1/buyer/returns": post_op("Return a lead the buyer bought (one return per lead)", ReturnRequest,
                                         ReturnAnswer, seller_errors + ("404", "409")),
            "/v1/buyer/outcomes": post_op("What became of a lead the buyer bought (the latest counts)", OutcomeRequest,
                                          OutcomeAnswer, seller_errors + ("404",)),
            "/v1/returns": query_op("Returns, oldest first: an operator's every one, a buyer's own", ReturnList, {
                "status": "approved, pending or denied", **pages}),
            "/v1/returns/{return_id}/approve": post_op("An operator approves a pending return", DecisionRequest,
                                                       ReturnAnswer, seller_errors + ("404",), "return_id", False),
            "/v1/returns/{return_id}/deny": post_op("An operator denies a pending return", DecisionRequest,
                                                    ReturnAnswer, seller_errors + ("404",), "return_id", False),
            "/v1/privacy/opt-outs": post_op("An operator opts a consumer out by email or phone: no buyer is offered "
                                            "their leads again", ConsumerRequest, OptOutAnswer, seller_errors),
            "/v1/privacy/deletions": post_op("An operator deletes a consumer's personal data from every lead, and opts "
                                             "them out", ConsumerRequest, DeletionAnswer, seller_errors),
            "/v1/privacy/requests": query_op("The privacy request log, oldest first: what was done and when, never "
                                             "whose", PrivacyRequestList, {**days, **pages}),
            "/healthz": {"get": {"summary": "Ready to take requests",
                                 "responses": answers(Health, ("503",))}},
            "/metrics": {"get": {"summary": "Prometheus metrics of this worker, for metrics_allowed_ips or an "
                                            "operator's key",
                                 "responses": {"200": {
                                     "description": "Prometheus text exposition format",
                                     "content": {"text/plain": {"schema": {"type": "string"}}}},
                                     "401": error("401"), "403": error("403")}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
