"""The seller API as an OpenAPI 3.1 document, generated from the request/answer Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from .schema import (DirectPostRequest, ErrorResponse, Health, PingRequest, PingResponse, PingTrace, PostRequest,
                     PostResponse)

_ERRORS = {
    "400": "malformed_json", "401": "unauthorized", "403": "forbidden", "404": "not_found",
    "409": "post_in_progress or no_bid", "410": "ping_expired", "413": "payload_too_large",
    "415": "unsupported_media_type", "422": "validation_error, pii_in_ping or ping_mismatch",
    "503": "overloaded, store_unavailable or shutting_down",
}


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [PingRequest, PostRequest, DirectPostRequest, PingResponse, PostResponse, PingTrace, ErrorResponse, Health],
        ref_template="#/components/schemas/{name}")

    def ref(struct: type) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{struct.__name__}"}

    def error(code: str) -> dict[str, Any]:
        return {"description": _ERRORS[code], "content": {"application/json": {"schema": ref(ErrorResponse)}}}

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

    seller_errors = ("400", "401", "403", "413", "415", "422", "503")
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
