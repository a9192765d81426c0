"""The lease API's OpenAPI 3.1 document, generated from the request models it validates with,
so the published description cannot drift from what the server accepts."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from budgetops.apis.leaseprotocol import (
    BATCH_MAX,
    LEASE_ID_PATTERN,
    HandshakeRequest,
    RefreshRequest,
    ReleaseRequest,
    UsageRecord,
)

ERRORS: dict[str, tuple[int, str]] = {
    "INVALID_REQUEST": (400, "malformed JSON, or a field missing, mistyped or out of range"),
    "INVALID_TOKEN": (401, "no token, a bad one, expired, rotated or revoked"),
    "BUDGET_EXCEEDED": (403, "nothing left in the agent's budget to lease"),
    "LEASE_FORBIDDEN": (403, "a budget_id that is not the token's"),
    "LEASE_NOT_FOUND": (404, "the agent holds no such lease, or it closed longer ago than its ttl"),
    "NOT_FOUND": (404, "no such path"),
    "METHOD_NOT_ALLOWED": (405, "the path answers another method"),
    "REQUEST_TIMEOUT": (408, "the body did not arrive within 30 s"),
    "REPORT_OUT_OF_ORDER": (409, "a record too far past what was counted"),
    "REPORT_CONFLICT": (409, "a record counted before, sent again with another cost"),
    "TOO_MANY_UNNUMBERED": (409, "the lease counted as many records without seq as it may"),
    "LEASE_CLOSED": (409, "a record on a closed lease of a call made after the close"),
    "TOO_MANY_LEASES": (409, "the agent holds as many leases as an account may"),
    "PAYLOAD_TOO_LARGE": (413, "a body over 1 MiB"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "not application/json, or compressed"),
    "INTERNAL": (500, "an unexpected failure; details only in the server's log"),
    "HANDSHAKE_FAILED": (503, "the agent's provider key cannot be read"),
    "UNAVAILABLE": (503, "the budget could not be written in time; retry"),
}
"""Every error code the lease API answers with, its HTTP status and when."""

_MONEY = {"type": "number", "minimum": 0, "description": "USD, exact to the micro-dollar"}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_TIME = {"type": "string", "format": "date-time"}
_TERMS = {
    "max_call_cost": _MONEY | {"description": "no single call may cost more (USD)"},
    "warn_at_percent": {
        "type": "integer",
        "minimum": 1,
        "maximum": 99,
        "description": "reports answer with warnings once a lease or its account spent this share",
    },
}
"""The limits of the runtime's calls, in every answer that grants a lease when set."""
_SEALED = r"^AES256:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$"
_RESPONSES: dict[str, dict[str, Any]] = {
    "Handshake": _object(
        ["ip_token", "key_salt", "budget_granted", "budget_remaining", "lease_id", "provider"],
        ip_token={
            "type": "string",
            "pattern": r"^AES256:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$",
        },
        key_salt={"type": "string", "contentEncoding": "base64"},
        budget_granted=_MONEY,
        budget_remaining=_MONEY,
        lease_id={"type": "string", "pattern": LEASE_ID_PATTERN},
        provider={"type": "string"},
        provider_model={"type": "string"},
        expires_at=_TIME,
        **_TERMS,
    ),
    "Report": _object(
        ["lease_id", "accepted", "duplicates", "spent", "remaining"],
        lease_id={"type": "string"},
        accepted={"type": "integer"},
        duplicates={"type": "integer"},
        spent=_MONEY,
        remaining=_MONEY,
        uncovered=_MONEY,
        late=_MONEY,
        warnings={
            "type": "array",
            "items": _object(
                ["scope", "percent_used", "message"],
                scope={"enum": ["lease", "account"]},
                percent_used={"type": "string", "pattern": r"^[0-9]+[.][0-9]$"},
                message={"type": "string"},
            ),
        },
        over_max_call_cost={
            "type": "array",
            "items": {"type": "string"},
            "description": "request ids of calls that cost more than one call may: counted",
        },
    ),
    "Refresh": _object(
        ["status", "budget_remaining", "total_allocated", "total_spent"],
        status={"enum": ["approved", "denied"]},
        reason={"enum": ["total_budget_exhausted"]},
        budget_granted=_MONEY,
        budget_remaining=_MONEY,
        lease_id={"type": "string"},
        total_allocated=_MONEY,
        total_spent=_MONEY,
        leased_out=_MONEY,
        expires_at=_TIME,
        **_TERMS,
    ),
    "Release": _object(
        ["lease_id", "status", "returned", "spent", "budget_remaining"],
        lease_id={"type": "string"},
        status={"enum": ["released", "expired", "revoked"]},
        returned=_MONEY,
        spent=_MONEY,
        budget_remaining=_MONEY,
    ),
    "Lease": _object(
        ["lease_id", "agent_id", "budget_id", "status", "granted", "spent", "remaining"],
        lease_id={"type": "string"},
        agent_id={"type": "string"},
        budget_id={"type": "string"},
        status={"enum": ["active", "released", "expired", "revoked"]},
        granted=_MONEY,
        spent=_MONEY,
        remaining=_MONEY,
        late_spent=_MONEY,
        reported_through={"type": "integer"},
        created_at=_TIME,
        expires_at=_TIME,
    ),
    "Error": _object(
        ["error"],
        error=_object(
            ["code", "message"],
            code={"enum": sorted(ERRORS)},
            message={"type": "string"},
        ),
    ),
}


_BODY_ERRORS = ["UNSUPPORTED_MEDIA_TYPE", "PAYLOAD_TOO_LARGE", "REQUEST_TIMEOUT"]
"""What any request with a body may be answered, before the body is read."""


def _operation(
    summary: str, request: str | None, response: str, codes: list[str], *, token: bool = True
) -> dict[str, Any]:
    statuses: dict[str, Any] = {
        "200": {"description": "OK", "content": _json(response)},
    }
    body_errors = _BODY_ERRORS if request is not None else []
    for code in [*codes, *body_errors, "INVALID_REQUEST", "INTERNAL", "UNAVAILABLE"]:
        status = str(ERRORS[code][0])
        entry = statuses.setdefault(status, {"description": "", "content": _json("Error")})
        entry["description"] = ", ".join(filter(None, [entry["description"], code]))
    operation: dict[str, Any] = {"summary": summary, "responses": statuses}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": _json(request)}
    if token:
        operation["security"] = [{"agentToken": []}]
    return operation


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _report_schema(record: dict[str, Any]) -> dict[str, Any]:
    """A batch (`reports`, one record at least) or one record with its `lease_id`: what
    `ReportRequest` reads, which pydantic's schema of it cannot say (its `before` validator
    makes the single form a batch)."""
    lease_id = {"type": "string", "pattern": LEASE_ID_PATTERN}
    batch = _object(
        ["lease_id", "reports"],
        lease_id=lease_id,
        reports={
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_MAX,
            "items": {"$ref": "#/components/schemas/UsageRecord"},
        },
    )
    single = {
        **record,
        "required": ["lease_id", *record["required"]],
        "properties": {"lease_id": lease_id, **record["properties"]},
        "not": {"required": ["reports"]},
    }
    single.pop("title", None)
    return {"title": "ReportRequest", "oneOf": [batch, single]}


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document served at /api/v1/openapi.json."""
    schemas: dict[str, Any] = dict(_RESPONSES)
    for model in (HandshakeRequest, RefreshRequest, ReleaseRequest, UsageRecord):
        schema = _schema(model)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["ReportRequest"] = _report_schema(schemas["UsageRecord"])
    auth = ["INVALID_TOKEN", "LEASE_FORBIDDEN", "LEASE_NOT_FOUND"]
    lease_path = {
        "name": "lease_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": LEASE_ID_PATTERN},
    }
    lease_get = _operation("One lease as the ledger has it", None, "Lease", auth)
    lease_get["parameters"] = [lease_path]
    return {
        "openapi": "3.1.0",
        "info": {"title": "BudgetOps lease API", "version": "v1"},
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/auth/handshake": {
                "post": _operation(
                    "Borrow a lease and the sealed provider key",
                    "HandshakeRequest",
                    "Handshake",
                    ["INVALID_TOKEN", "BUDGET_EXCEEDED", "HANDSHAKE_FAILED", "TOO_MANY_LEASES"],
                    token=False,
                )
            },
            "/budget/report": {
                "post": _operation(
                    "Report usage (one record or a batch), counted once",
                    "ReportRequest",
                    "Report",
                    [
                        *auth,
                        "REPORT_OUT_OF_ORDER",
                        "REPORT_CONFLICT",
                        "TOO_MANY_UNNUMBERED",
                        "LEASE_CLOSED",
                    ],
                )
            },
            "/budget/refresh": {
                "post": _operation(
                    "Ask for a new lease when the current one runs low",
                    "RefreshRequest",
                    "Refresh",
                    [*auth, "TOO_MANY_LEASES"],
                )
            },
            "/budget/release": {
                "post": _operation(
                    "Close a lease; the unspent rest returns", "ReleaseRequest", "Release", auth
                )
            },
            "/budget/leases/{lease_id}": {"get": lease_get},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "agentToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
