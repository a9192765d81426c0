"""The webhook's HTTP server: aiohttp on one event loop thread, TLS that reloads itself.

Every input anyone on the port can send gets an answer: an unknown path a 404, a body over
the limit a 413, a missing length a 411; what is inside a body is `Admission.review`'s
business.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import Callable, Coroutine
from ipaddress import ip_address
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from budgetops.admission.webhook import (
    DEFAULT_TIMEOUT,
    MAX_BODY,
    SHUTDOWN_GRACE,
    Admission,
    Answer,
    problem,
)
from budgetops.apis.common import parse_duration

log = logging.getLogger("budgetops.webhook")

T = TypeVar("T")


def _timeout(value: str | None) -> float:
    """The deadline the API server puts in the webhook URL (`/validate?timeout=5s`)."""
    try:
        return parse_duration(value).total_seconds() if value else DEFAULT_TIMEOUT
    except (ValueError, OverflowError):
        return DEFAULT_TIMEOUT


def _json(answer: Answer) -> web.Response:
    return web.json_response(answer.body, status=answer.status)


def _application(admission: Admission, ready: Callable[[], bool]) -> web.Application:
    async def validate(request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is None:
            return _json(problem(411, "a Content-Length header is required"))
        if length > MAX_BODY:
            response = _json(problem(413, f"the body is larger than {MAX_BODY} bytes"))
            response.force_close()  # the body was not read: the connection cannot be reused
            return response
        try:
            body = await request.read()
        except ConnectionResetError:  # the caller hung up: nobody is left to answer
            log.debug("%s hung up before sending its whole body", request.remote)
            return _json(problem(400, "the body ended early"))
        return _json(await admission.review(body, timeout=_timeout(request.query.get("timeout"))))

    async def metrics(_: web.Request) -> web.StreamResponse:
        payload = generate_latest(admission.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.StreamResponse:
        return _json(Answer(200, {"status": "ok"}))

    async def readyz(_: web.Request) -> web.StreamResponse:
        ok = await asyncio.get_running_loop().run_in_executor(None, ready)
        return _json(Answer(200 if ok else 503, {"status": "ok" if ok else "not ready"}))

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return _json(problem(404, f"no such path {request.path_qs}; POST /validate"))

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/validate", validate)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{path:.*}", elsewhere)
    return app


TLS_CHECK_SECONDS = 10.0


class WebhookServer:
    """The webhook's event loop in a daemon thread, and the certificate watcher that lives
    and dies with it."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopped = threading.Event()
        self.port = 0

    def _call(self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def start(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        """Listen on `host:port`; a port that cannot be bound raises and leaves no thread."""
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="webhook", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(loop, self._listen(host, port, context))
        except BaseException:
            self.close()
            raise

    async def _listen(self, host: str, port: int, context: ssl.SSLContext | None) -> int:
        await self._runner.setup()
        # a deep backlog: the default resets bursts of new connections
        site = web.TCPSite(self._runner, host, port, ssl_context=context, backlog=256)
        await site.start()
        bound: int = self._runner.addresses[0][1]
        return bound

    def close(self) -> None:
        """Stop accepting, answer what is in flight (up to SHUTDOWN_GRACE), then stop.
        Closing again, or a server never started, does nothing more than stop its watcher."""
        self.stopped.set()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        self._call(loop, self._stop(loop))
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()
        loop.close()

    async def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        await self._runner.cleanup()
        await loop.shutdown_default_executor()


def _watch_certificate(
    context: ssl.SSLContext, cert: str, key: str, stopped: threading.Event, every: float
) -> None:
    """Reload the serving pair when its files change (a rotated Secret is remounted), so
    new connections use the new certificate without a restart. A pair that does not load
    (caught mid-rotation) is tried again at the next check, and the old one stays in use."""

    def stamp() -> tuple[float, float]:
        return (os.stat(cert).st_mtime, os.stat(key).st_mtime)

    seen = stamp()
    while not stopped.wait(every):
        try:
            current = stamp()
            if current != seen:
                context.load_cert_chain(cert, key)
                seen = current
                log.info("reloaded the serving certificate from %s", cert)
        except (OSError, ssl.SSLError):
            log.warning("could not reload the serving certificate; keeping the current one")


def serve(
    admission: Admission,
    *,
    host: str,
    port: int,
    tls: tuple[str, str] | None,
    tls_check_seconds: float = TLS_CHECK_SECONDS,
) -> WebhookServer:
    """A running server (in a daemon thread); plain HTTP only on a loopback address.
    Port 0 picks a free port, which `server.port` then holds."""
    if tls is None and not ip_address(host).is_loopback:
        raise ValueError(
            f"refusing plain HTTP on {host}: give --tls-cert-file and --tls-key-file, "
            "or listen on 127.0.0.1"
        )

    server = WebhookServer(_application(admission, admission.store.ready))
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        threading.Thread(
            target=_watch_certificate,
            args=(context, *tls, server.stopped, tls_check_seconds),
            name="tls-reload",
            daemon=True,
        ).start()
    server.start(host, port, context)
    return server
