"""The seller API as an OpenAPI 3.1 document, generated from the request/answer Structs
and the table of error codes (``errors.Code``)."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import Code
from .schema import (DirectPostRequest, ErrorResponse, Health, PingRequest, PingResponse, PingTrace, PostRequest,
                     PostResponse)


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
        [PingRequest, PostRequest, DirectPostRequest, PingResponse, PostResponse, PingTrace, ErrorResponse, Health],
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

    def post_op(summary: str, body: type, ok: type, codes: tuple[str, ...]) -> dict[str, Any]:
        return {"post": {
            "summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref(body)}}},
            "responses": answers(ok, codes)}}

    seller_errors = ("400", "401", "403", "408", "413", "415", "422", "503")
    return {
        "openapi": "3.1.0",
        "info": {"title": "pingpost seller API", "version": "1"},
        "paths": {
            "/v1/ping": post_op("Ping: ask the buyers for a price", PingRequest, PingResponse, seller_errors),
            "/v1/post": post_op("Post the full lead for a ping", PostRequest, PostResponse,
                                seller_errors + ("404", "409", "410")),
            "/v1/leads": post_op("Direct post: ping and post in one call", DirectPostRequest, PostResponse,
                                 seller_errors),
            "/v1/pings/{ping_id}": {"get": {
                "summary": "The per-lead trace of a ping: what each campaign did",
                "security": [{"bearer": []}, {"apiKey": []}],
                "parameters": [{"name": "ping_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": answers(PingTrace, ("401", "403", "404", "503"))}},
            "/healthz": {"get": {"summary": "Ready to take requests",
                                 "responses": answers(Health, ("503",))}},
            "/metrics": {"get": {"summary": "Prometheus metrics of this worker, for metrics_allowed_ips only",
                                 "responses": {"200": {
                                     "description": "Prometheus text exposition format",
                                     "content": {"text/plain": {"schema": {"type": "string"}}}},
                                     "403": error("403")}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
