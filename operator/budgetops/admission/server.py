"""The webhook's HTTP server: aiohttp on one event loop thread, TLS that reloads itself.

Every input anyone on the port can send gets an answer: an unknown path a 404, a body over
the limit a 413, a missing length a 411, a body not sent as `application/json` a 415; what
is inside a body is `Admission.review`'s business.

Bounded against slow and stalled callers: headers must arrive within `HEADER_TIMEOUT` of
their first byte, a body within the request's deadline (at most `BODY_TIMEOUT`), an idle
keep-alive connection is closed after `KEEPALIVE_TIMEOUT`, a TLS handshake within
`HEADER_TIMEOUT`, and open connections are capped below the file-descriptor limit, with room
for the accepts in flight, the oldest idle one shed first (or, when none is idle, the new
one told 503). accept() failures from descriptor exhaustion are logged at most once per
`FLOOD_LOG_SECONDS` with a count. A compressed body is a 415: the API server never
compresses.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
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


def _unread(answer: Answer) -> web.Response:
    response = _json(answer)
    response.force_close()  # the body was not read: the connection cannot be reused
    return response


HEADER_TIMEOUT = 10.0  # from a request's first byte to its last header
BODY_TIMEOUT = 30.0  # the most a body may take, whatever the deadline in the URL
KEEPALIVE_TIMEOUT = 60.0  # an idle keep-alive connection is closed after this
MAX_CONNECTIONS = 4096  # and never more than the descriptor limit leaves room for (see below)
FD_RESERVE = 64  # descriptors kept for the store, logs, certificates, the executor
BACKLOG = 1024  # connections the kernel queues until accepted: a burst is not reset
ACCEPT_BATCH = 32
"""Connections asyncio accepts in one turn of its loop. Each holds its descriptor for turns
before the cap can shed anything for it (a turn to make its transport, one to call
connection_made, one to close the connection shed, one to release its socket), so the cap
leaves room for ACCEPT_TURNS batches: past the descriptor limit accept() fails, and asyncio
then stops accepting for a whole second (measured: the first admission after a burst of
1,100 connections against 1,024 descriptors waited 1 to 2 s)."""
ACCEPT_TURNS = 6
FLOOD_LOG_SECONDS = 10.0
LINGERING_TIME = 2.0  # how long an unread body is drained before the connection is closed
MAX_LINE = 8190
MAX_FIELD = 8190
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
"""The answer to a connection past the cap when none open is idle, sent before closing it."""


@dataclass(frozen=True)
class Limits:
    """How long callers may take and how many may be connected; injectable for tests."""

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    flood_log_seconds: float = FLOOD_LOG_SECONDS

    def connection_cap(self) -> int:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        room = soft - FD_RESERVE - ACCEPT_BATCH * ACCEPT_TURNS
        return max(1, min(self.max_connections, room))


class _Connection(RequestHandler):
    """aiohttp's handler, watched: when its head started arriving, whether it is being
    answered, when it was last active."""

    def __init__(self, guard: _Guard, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.guard = guard
        self.busy = False
        self.head_since: float | None = None
        self.active = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.connections.pop(self, None)
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a malformed request (a bad Content-Length, an oversized header) with
        a traceback, after answering it with a 400: one line is enough."""
        error = kw.get("exc_info")
        log.debug("bad request: %s", error if isinstance(error, BaseException) else args[:1])

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_since is None:
            self.head_since = self.guard.now()
        super().data_received(data)


class _Guard:
    """Every open connection; sheds the oldest idle ones past the cap and closes heads that
    take longer than `header_timeout`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cap = limits.connection_cap()
        self.connections: dict[_Connection, None] = {}  # in order of last activity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._flood_logged: dict[str, float] = {}
        self._flood_suppressed: dict[str, int] = {}
        self.shed = 0
        self.stopping = False

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.set_exception_handler(self._exception)
        self._sweep()

    def stop(self) -> None:
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()

    def opened(self, connection: _Connection) -> None:
        connection.active = self.now()
        self.connections[connection] = None
        while len(self.connections) > self.cap:
            idle = next((c for c in self.connections if not c.busy and c is not connection), None)
            victim = idle if idle is not None else connection
            self.connections.pop(victim, None)
            self.shed += 1
            if victim is connection and connection.transport is not None:
                connection.transport.write(BUSY)  # every connection is answering: say so
            # closed on the next turn: a transport closed inside connection_made confuses
            # the selector transport that is still setting itself up
            assert self._loop is not None
            self._loop.call_soon(victim.force_close)
            if victim is connection:
                break
            self._flood("shed idle connections: %d open is the cap", self.cap)

    def touched(self, connection: _Connection, busy: bool) -> None:
        connection.busy = busy
        connection.head_since = None
        connection.active = self.now()
        if connection in self.connections:  # to the back: the oldest idle stay in front
            del self.connections[connection]
            self.connections[connection] = None

    def _sweep(self) -> None:
        now = self.now()
        late = [
            c
            for c in self.connections
            if not c.busy
            and c.head_since is not None
            and now - c.head_since > self.limits.header_timeout
        ]
        for connection in late:
            self.connections.pop(connection, None)
            connection.force_close()
        assert self._loop is not None
        self._sweeper = self._loop.call_later(min(1.0, self.limits.header_timeout / 4), self._sweep)

    def _flood(self, message: str, *args: object) -> None:
        now = self.now()
        if now - self._flood_logged.get(message, -float("inf")) < self.limits.flood_log_seconds:
            self._flood_suppressed[message] = self._flood_suppressed.get(message, 0) + 1
            return
        suppressed = self._flood_suppressed.pop(message, 0)
        self._flood_logged[message] = now
        log.warning(message + " (%d more like it suppressed)", *args, suppressed)

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            self._flood(
                "accept() failed: %s; answering the %d connections already open",
                error.strerror,
                len(self.connections),
            )
            return
        if self.stopping and isinstance(error, ValueError) and "file descriptor" in str(error):
            # asyncio retries accept() 1 s after EMFILE; stopped within that second, the
            # retry finds the listening socket closed. Nothing is lost: we stopped serving.
            log.debug("an accept() retry found the listening socket closed")
            return
        loop.default_exception_handler(context)


def _application(
    admission: Admission,
    ready: Callable[[], bool],
    limits: Limits = Limits(),
    mounted: dict[str, web.Application] | None = None,
) -> web.Application:
    def refuse(answer: Answer) -> web.Response:
        """A request refused before its body is read: counted like any other error."""
        admission.metrics.errors.labels(str(answer.status)).inc()
        return _unread(answer)

    async def validate(request: web.Request) -> web.StreamResponse:
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return refuse(problem(415, f"Content-Encoding {encoding!r} is not supported"))
        length = request.content_length
        if length is None:
            return refuse(problem(411, "a Content-Length header is required"))
        if length > MAX_BODY:
            return refuse(problem(413, f"the body is larger than {MAX_BODY} bytes"))
        if request.content_type != "application/json":  # what the API server sends
            return refuse(
                problem(415, "send the AdmissionReview as Content-Type: application/json")
            )
        deadline = _timeout(request.query.get("timeout"))
        try:
            async with asyncio.timeout(min(deadline, limits.body_timeout)):
                body = await request.read()
        except TimeoutError:
            log.debug("%s sent its body too slowly", request.remote)
            return refuse(problem(408, "the body did not arrive in time"))
        except ConnectionResetError:  # the caller hung up: nobody is left to answer
            log.debug("%s hung up before sending its whole body", request.remote)
            return _json(problem(400, "the body ended early"))
        return _json(await admission.review(body, timeout=deadline))

    async def metrics(_: web.Request) -> web.StreamResponse:
        # collectors read and parse budgets from the store: not on the admission loop
        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(None, generate_latest, admission.metrics.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.StreamResponse:
        return _json(Answer(200, {"status": "ok"}))

    async def readyz(_: web.Request) -> web.StreamResponse:
        ok = await asyncio.get_running_loop().run_in_executor(None, ready)
        return _json(Answer(200 if ok else 503, {"status": "ok" if ok else "not ready"}))

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return _json(problem(404, f"no such path {request.path_qs}; POST /validate"))

    @web.middleware
    async def watched(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        connection = request.protocol
        if not isinstance(connection, _Connection):
            return await handler(request)
        connection.guard.touched(connection, busy=True)
        try:
            return await handler(request)
        finally:
            connection.guard.touched(connection, busy=False)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[watched])

    async def settle_or_say(_: web.Application) -> None:
        await admission.charging.stop_retrying()

    app.on_shutdown.append(settle_or_say)
    app.router.add_post("/validate", validate)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for prefix, sub in (mounted or {}).items():
        app.add_subapp(prefix, sub)
    app.router.add_route("*", "/{path:.*}", elsewhere)
    return app


TLS_CHECK_SECONDS = 10.0


class _Site(web.TCPSite):
    """aiohttp's TCP site, serving watched connections."""

    factory: Callable[[], _Connection]

    async def start(self) -> None:
        await web.BaseSite.start(self)
        host = self._host or ""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listening = socket.create_server((host, self._port), family=family)
        except OSError as error:
            why = (error.strerror or str(error)).lower()
            raise OSError(error.errno, f"cannot listen on {host}:{self._port}: {why}") from None
        self._server = await asyncio.get_running_loop().create_server(
            self.factory,
            sock=listening,
            backlog=ACCEPT_BATCH,  # asyncio listens with it, and accepts as many per turn
            ssl=self._ssl_context,
            ssl_handshake_timeout=HEADER_TIMEOUT if self._ssl_context else None,
        )
        listening.listen(BACKLOG)  # the kernel's queue, deeper than one turn's accepts


class WebhookServer:
    """The webhook's event loop in a daemon thread, and the certificate watcher that lives
    and dies with it."""

    def __init__(self, app: web.Application, limits: Limits = Limits()) -> None:
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE
        )
        self.limits = limits
        self.guard = _Guard(limits)
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
        loop = asyncio.get_running_loop()
        self.guard.install(loop)
        web_server = self._runner.server
        assert web_server is not None
        guard, limits = self.guard, self.limits

        def connection() -> _Connection:
            return _Connection(
                guard,
                web_server,
                loop=loop,
                access_log=None,
                keepalive_timeout=limits.keepalive_timeout,
                max_line_size=MAX_LINE,
                max_field_size=MAX_FIELD,
                auto_decompress=False,
                lingering_time=LINGERING_TIME,  # a Content-Encoding is refused, never decoded
            )

        site = _Site(self._runner, host, port, ssl_context=context)
        site.factory = connection
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
        self.guard.stop()
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


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (what a server
    started by a shell or systemd is often given: 1,024 of many more), so that the
    connection cap is far above what the API server opens. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:  # a hard limit above what the kernel allows
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, error)
            return soft
    return hard


def serve(
    admission: Admission,
    *,
    host: str,
    port: int,
    tls: tuple[str, str] | None,
    tls_check_seconds: float = TLS_CHECK_SECONDS,
    limits: Limits = Limits(),
    mounted: dict[str, web.Application] | None = None,
) -> WebhookServer:
    """A running server (in a daemon thread); plain HTTP only on a loopback address.
    Port 0 picks a free port, which `server.port` then holds. `mounted` adds applications
    under path prefixes (the lease API at /api/v1), behind the same TLS and limits."""
    if tls is None and not ip_address(host).is_loopback:
        raise ValueError(
            f"refusing plain HTTP on {host}: give --tls-cert-file and --tls-key-file, "
            "or listen on 127.0.0.1"
        )

    app = _application(admission, admission.store.ready, limits, mounted)
    server = WebhookServer(app, limits)
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
