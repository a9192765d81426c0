"""The validating webhook: AdmissionReview in, charges through the store, AdmissionReview out.

Every input the API server (or anyone on the port) can send gets an answer: malformed
envelopes a 400 with what is wrong, an unknown path a 404, a body over the limit a 413, a
request BudgetOps cannot charge a calm denial, and an internal failure a 500 that names no
internals (the details go to the log).

The server is aiohttp on one event loop thread: a request waiting for its charge costs a
coroutine, not a thread, so many concurrent admissions share one group-commit batch without
handing the interpreter lock back and forth between dozens of threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import ip_address
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from budgetops.admission.classify import Classified, Identity, Refused, classify
from budgetops.admission.review import AdmissionRequest, AdmissionReview, response
from budgetops.apis.common import parse_duration
from budgetops.apis.resources import Budget, RiskBudget, TrustBudget, field_errors
from budgetops.engine.clock import Clock
from budgetops.engine.decisions import Decision, admit_risk, admit_trust
from budgetops.engine.ledger import confirm
from budgetops.observability.events import EventRecorder, LogEvents
from budgetops.observability.metrics import AdmissionMetrics
from budgetops.store import BudgetKey, BudgetStore, ChargeTimeout, NotFound

MAX_BODY = 3 * 1024 * 1024
"""The API server's own request limit for objects is 3 MiB; a review is never larger."""

DEFAULT_TIMEOUT = 10.0
"""Seconds the API server waits for a webhook unless it says otherwise (`?timeout=5s`)."""

ANSWER_MARGIN = 0.5
"""Seconds kept back from the API server's deadline to send the answer in."""

SHUTDOWN_GRACE = DEFAULT_TIMEOUT
"""Seconds a stopping server waits for admissions in flight to be answered."""

RETRY_MESSAGE = (
    "BudgetOps could not charge this request before the API server's deadline; the request "
    "was not admitted. Please try again."
)

log = logging.getLogger("budgetops.webhook")

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """An HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def _problem(status: int, message: str) -> Answer:
    return Answer(status, {"error": message})


class Admission:
    """Decides AdmissionReviews against the budgets in a store."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        clock: Clock,
        identity: Identity,
        ttl: timedelta,
        metrics: AdmissionMetrics | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.identity = identity
        self.ttl = ttl
        self.metrics = metrics or AdmissionMetrics(CollectorRegistry())
        self.events: EventRecorder = events or LogEvents()

    async def review(self, body: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> Answer:
        """Parse, classify, charge, answer. Never raises for anything a client sends."""
        with self.metrics.latency.time():
            answer = await self._review(body, timeout=timeout)
        if answer.status != 200:
            self.metrics.errors.labels(str(answer.status)).inc()
        return answer

    async def _review(self, body: bytes, *, timeout: float) -> Answer:
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _problem(400, f"the body is not JSON: {error}")
        except RecursionError:
            return _problem(400, "the body is not an AdmissionReview: it nests too deeply")
        if not isinstance(document, dict):
            return _problem(400, "the body must be a JSON object (an AdmissionReview)")
        try:
            request = AdmissionReview.model_validate(document).request
        except ValidationError as error:
            return _problem(
                400, "not an admission.k8s.io/v1 AdmissionReview: " + "; ".join(field_errors(error))
            )
        try:
            return Answer(200, await self.decide(request, timeout=timeout))
        except ChargeTimeout:
            log.warning("admission of %s ran out of time", request.describe())
            self.metrics.admissions.labels("", "denied", "Timeout").inc()
            return Answer(
                200, response(request.uid, allowed=False, message=RETRY_MESSAGE, code=503)
            )
        except Exception:
            log.exception("admission of %s failed", request.describe())
            return _problem(500, "BudgetOps could not decide this request; see the webhook log")

    async def decide(
        self, request: AdmissionRequest, *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The AdmissionReview answer for one request; raises ChargeTimeout past `timeout`."""
        try:
            charges = classify(self.store.list(with_status=False), request, self.identity)
        except Refused as refusal:
            self.metrics.admissions.labels("", "denied", "Refused").inc()
            return response(request.uid, allowed=False, message=str(refusal), code=400)
        deadline = time.monotonic() + max(timeout - ANSWER_MARGIN, 0.1)
        decisions = await self._charge(charges, request, deadline)
        denied = [d.message for d in decisions if not d.allowed]
        warnings = [w for d in decisions for w in d.warnings]
        if denied:
            return response(request.uid, allowed=False, message=" ".join(denied))
        return response(request.uid, allowed=True, warnings=warnings)

    async def _charge(
        self, charges: Classified, request: AdmissionRequest, deadline: float
    ) -> list[Decision]:
        now = self.clock()
        decisions = []
        for trust in charges.trust:

            def charge_trust(budget: Budget, c: Any = trust) -> Decision:
                assert isinstance(budget, TrustBudget)
                decision = admit_trust(
                    budget.status,
                    budget.spec,
                    account=c.account,
                    cost=c.cost,
                    key=c.key,
                    ref=c.ref,
                    witness=c.witness,
                    now=now,
                    ttl=self.ttl,
                    dry_run=request.dry_run,
                    break_glass=c.break_glass,
                )
                if c.settle_now and decision.cost > 0:
                    confirm(budget.status, key=c.key, now=now)
                return decision

            decisions.append(await self._update(trust.budget, charge_trust, deadline))
        for risk in charges.risk:

            def charge_risk(budget: Budget, c: Any = risk) -> Decision:
                assert isinstance(budget, RiskBudget)
                return admit_risk(
                    budget.status,
                    budget.spec,
                    release=c.release,
                    now=now,
                    ttl=self.ttl,
                    dry_run=request.dry_run,
                )

            decisions.append(await self._update(risk.budget, charge_risk, deadline))
        return decisions

    async def _update(
        self, key: BudgetKey, change: Callable[[Budget], Decision], deadline: float
    ) -> Decision:
        """Charge one budget and count the outcome. Only charges and break-glass uses are
        written: denials, replays and dry runs leave the status as it was."""
        decision = await self.store.update_status_async(
            key,
            change,
            timeout=max(deadline - time.monotonic(), 0.0),
            needs_write=lambda decided: decided.changes_ledger,
        )
        verdict = "allowed" if decision.allowed else "denied"
        self.metrics.admissions.labels(key.kind, verdict, decision.reason).inc()
        if decision.reason == "BreakGlass":
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._announce_break_glass, key, decision)
        return decision

    def _announce_break_glass(self, key: BudgetKey, decision: Decision) -> None:
        """Every break-glass use is an Event too: people watch Events, not status lists."""
        try:
            budget = self.store.get(key)
        except NotFound:
            return
        self.events.emit(budget, type="Warning", reason="BreakGlass", message=decision.warnings[0])


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
            return _json(_problem(411, "a Content-Length header is required"))
        if length > MAX_BODY:
            response = _json(_problem(413, f"the body is larger than {MAX_BODY} bytes"))
            response.force_close()  # the body was not read: the connection cannot be reused
            return response
        try:
            body = await request.read()
        except ConnectionResetError:  # the caller hung up: nobody is left to answer
            log.debug("%s hung up before sending its whole body", request.remote)
            return _json(_problem(400, "the body ended early"))
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
        return _json(_problem(404, f"no such path {request.path_qs}; POST /validate"))

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

    def ready() -> bool:
        try:
            admission.store.list()
        except Exception:
            log.exception("store not ready")
            return False
        return True

    server = WebhookServer(_application(admission, ready))
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
