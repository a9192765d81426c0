"""The validating webhook: AdmissionReview in, AdmissionReview out; a thin adapter.

It parses and classifies (`admission/classify.py`: which budgets the request owes), hands the
charges to `usecases.charging.ChargingService` (decide, reserve, attest, settle, take back:
the only code that changes a budget's status for a charge) and shapes its decisions into an
answer.

Every body gets an answer: a malformed envelope a 400 with what is wrong, a request
BudgetOps cannot charge a calm denial, and an internal failure a 500 that names no
internals (the details go to the log). The HTTP server around it is `admission.server`.

Admissions wait for their charges as coroutines: many concurrent admissions share one
group-commit batch without handing the interpreter lock back and forth between threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from budgetops.admission.attest import subject_of
from budgetops.admission.classify import (
    Identity,
    Refused,
    classify,
)
from budgetops.admission.review import (
    AdmissionRequest,
    AdmissionReview,
    request_uid,
    response,
)
from budgetops.admission.scans import VulnerabilityReports, price
from budgetops.apis.jsonbody import JsonError, read_json
from budgetops.apis.resources import field_errors
from budgetops.engine.clock import Clock
from budgetops.observability.events import EventRecorder, LogEvents
from budgetops.observability.metrics import AdmissionMetrics
from budgetops.store import BudgetStore, ChargeTimeout
from budgetops.usecases.attest import Attestor
from budgetops.usecases.charging import ChargingService

MAX_BODY = 3 * 1024 * 1024
"""The API server's own request limit for objects is 3 MiB; a review is never larger."""

DEFAULT_TIMEOUT = 10.0
"""Seconds the API server waits for a webhook unless it says otherwise (`?timeout=5s`)."""

ANSWER_MARGIN = 0.5
"""Seconds kept back from the API server's deadline to send the answer in."""

READ_INLINE = 64 * 1024
"""Bodies up to this size are parsed on the event loop (well under a millisecond); larger
ones, up to MAX_BODY (a few hundred ms at worst), in a thread."""

SHUTDOWN_GRACE = DEFAULT_TIMEOUT
"""Seconds a stopping server waits for admissions in flight to be answered."""

RETRY_MESSAGE = (
    "BudgetOps could not charge this request before the API server's deadline; the request "
    "was not admitted. Please try again."
)

log = logging.getLogger("budgetops.webhook")


@dataclass(frozen=True)
class Answer:
    """An HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def problem(status: int, message: str) -> Answer:
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
        attestor: Attestor | None = None,
        reports: VulnerabilityReports | None = None,
    ) -> None:
        self.store = store
        self.reports = reports
        """Where the VulnerabilityReports are read from (None: a server with no cluster)."""
        self.attestor = attestor or Attestor()
        self.clock = clock
        self.identity = identity
        self.ttl = ttl
        self.metrics = metrics or AdmissionMetrics(CollectorRegistry())
        self.events: EventRecorder = events or LogEvents()
        self.charging = ChargingService(
            store,
            clock=clock,
            ttl=ttl,
            attestor=self.attestor,
            metrics=self.metrics,
            events=self.events,
        )

    async def review(self, body: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> Answer:
        """Parse, classify, charge, answer. Never raises for anything a client sends."""
        with self.metrics.latency.time():
            answer = await self._review(body, timeout=timeout)
        if answer.status != 200:
            self.metrics.errors.labels(str(answer.status)).inc()
        return answer

    async def _review(self, body: bytes, *, timeout: float) -> Answer:
        try:
            document = (
                read_json(body)
                if len(body) <= READ_INLINE
                else await asyncio.get_running_loop().run_in_executor(None, read_json, body)
            )
        except JsonError as error:
            return self._unreadable(error)
        if not isinstance(document, dict):
            return problem(400, "the body must be a JSON object (an AdmissionReview)")
        try:
            request = AdmissionReview.model_validate(document).request
        except ValidationError as error:
            return problem(
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
            return problem(500, "BudgetOps could not decide this request; see the webhook log")

    def _unreadable(self, error: JsonError) -> Answer:
        """A body past the JSON bounds, logged and counted: denied by its request's uid if
        that can be read (any status but 200 is a failed webhook to the API server), else a
        400."""
        uid = request_uid(error.document)
        log.warning("refused an AdmissionReview (uid %r): %s", uid, error)
        if not uid:
            return problem(400, str(error))
        self.metrics.errors.labels("400").inc()
        message = f"BudgetOps cannot read this AdmissionReview: {error}."
        return Answer(200, response(uid, allowed=False, message=message, code=400))

    async def decide(
        self, request: AdmissionRequest, *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The AdmissionReview answer for one request; raises ChargeTimeout past `timeout`."""
        deadline = time.monotonic() + max(timeout - ANSWER_MARGIN, 0.1)
        try:
            budgets = self.store.list(with_status=False)
            charges = classify(budgets, request, self.identity)
            notes: list[str] = []
            if charges.risk:  # points from VulnerabilityReports, for budgets that take them
                charges, notes = await price(self.reports, budgets, charges, request, deadline)
            owed = bool(charges.trust or charges.risk)  # most requests owe nothing
            decisions = (
                await self.charging.charge_async(
                    charges,
                    subject=subject_of(request),  # digests the object: only when charged
                    dry_run=request.dry_run,
                    deadline=deadline,
                    what=request.describe(),
                )
                if owed
                else []
            )
        except Refused as refusal:
            self.metrics.admissions.labels("", "denied", "Refused").inc()
            return response(request.uid, allowed=False, message=str(refusal), code=400)
        denied = [f"{budget}: {d.message}" for budget, d in decisions if not d.allowed]
        warnings = [*notes, *(w for _, d in decisions for w in d.warnings)]
        if denied:
            return response(request.uid, allowed=False, message=" ".join(denied), warnings=notes)
        return response(request.uid, allowed=True, warnings=warnings)
