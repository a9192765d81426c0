"""The lease API over HTTP (aiohttp): routes, body limits, tokens from headers, errors.

Mounted at `/api/v1` in the same server as the admission webhook, so it shares its TLS,
connection limits and shutdown. Every failure is an answer in the protocol's error format;
nothing a client sends makes a handler raise.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from budgetops.apis.leaseprotocol import (
    LEASE_ID_PATTERN,
    HandshakeRequest,
    RefreshRequest,
    ReleaseRequest,
    ReportRequest,
)
from budgetops.leaseapi.openapi import document
from budgetops.leaseapi.wire import BODY_MAX, dumps, error_body, parse
from budgetops.usecases.leasing import ApiError, LeaseService

log = logging.getLogger("budgetops.leaseapi")

PREFIX = "/api/v1"
BODY_SECONDS = 30.0
"""A body must arrive within this, so a slow sender cannot hold a connection open."""
_LEASE_ID = re.compile(LEASE_ID_PATTERN)

Handler = Callable[[web.Request], Awaitable[dict[str, Any]]]


def _answer(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


async def _body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Encoding {encoding!r} is not supported"
        )
    if request.content_type != "application/json":
        raise ApiError(
            415, "UNSUPPORTED_MEDIA_TYPE", "send the body as Content-Type: application/json"
        )
    if (request.content_length or 0) > BODY_MAX:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {BODY_MAX} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_SECONDS):
            while chunk := await request.content.read(65536):
                size += len(chunk)
                if size > BODY_MAX:
                    raise ApiError(
                        413, "PAYLOAD_TOO_LARGE", f"the body is larger than {BODY_MAX} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "REQUEST_TIMEOUT", "the body did not arrive in time") from None
    return b"".join(chunks)


def _token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "INVALID_TOKEN", "send the agent's identity token as Authorization: Bearer <token>"
        )
    return token.strip()


def lease_app(service: LeaseService) -> web.Application:
    """The lease API as an aiohttp application, to mount at PREFIX."""

    def endpoint(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def answered(request: web.Request) -> web.StreamResponse:
            try:
                return _answer(200, dumps(await handler(request)))
            except ApiError as error:
                return _answer(error.status, error_body(error), error.headers)
            except Exception:
                log.exception("lease API %s %s failed", request.method, request.path)
                internal = ApiError(
                    500, "INTERNAL", "BudgetOps could not answer; see the server's log"
                )
                return _answer(500, error_body(internal))

        return answered

    async def handshake(request: web.Request) -> dict[str, Any]:
        return await service.handshake(parse(await _body(request), HandshakeRequest))

    async def report(request: web.Request) -> dict[str, Any]:
        token = _token(request)
        return await service.report(token, parse(await _body(request), ReportRequest))

    async def refresh(request: web.Request) -> dict[str, Any]:
        token = _token(request)
        return await service.refresh(token, parse(await _body(request), RefreshRequest))

    async def release(request: web.Request) -> dict[str, Any]:
        token = _token(request)
        return await service.release(token, parse(await _body(request), ReleaseRequest))

    async def lease(request: web.Request) -> dict[str, Any]:
        token = _token(request)
        lease_id = request.match_info["lease_id"]
        if not _LEASE_ID.fullmatch(lease_id):
            raise ApiError(400, "INVALID_REQUEST", f"{lease_id[:80]!r} is not a lease_<uuid> id")
        return await service.lease(token, lease_id)

    async def openapi(_: web.Request) -> dict[str, Any]:
        return document()

    async def elsewhere(request: web.Request) -> dict[str, Any]:
        raise ApiError(404, "NOT_FOUND", f"no such path {request.path}; see {PREFIX}/openapi.json")

    routes: dict[str, dict[str, Handler]] = {
        "/auth/handshake": {"POST": handshake},
        "/budget/report": {"POST": report},
        "/budget/refresh": {"POST": refresh},
        "/budget/release": {"POST": release},
        "/budget/leases/{lease_id}": {"GET": lease},
        "/openapi.json": {"GET": openapi},
    }
    app = web.Application(client_max_size=BODY_MAX)
    for path, methods in routes.items():
        resource = app.router.add_resource(path)
        for method, handler in methods.items():
            resource.add_route(method, endpoint(handler))

        allowed = ", ".join(methods)

        async def wrong_method(request: web.Request, allowed: str = allowed) -> dict[str, Any]:
            raise ApiError(
                405,
                "METHOD_NOT_ALLOWED",
                f"{request.path} answers {allowed}, not {request.method}",
                headers={"Allow": allowed},
            )

        resource.add_route("*", endpoint(wrong_method))
    app.router.add_route("*", "/{path:.*}", endpoint(elsewhere))
    return app
