"""The validating webhook: AdmissionReview in, charges through the store, AdmissionReview out.

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from budgetops.admission.attest import Attestor, subject_of
from budgetops.admission.classify import (
    Classified,
    Identity,
    Refused,
    RiskCharge,
    TrustCharge,
    classify,
)
from budgetops.admission.review import (
    AdmissionRequest,
    AdmissionReview,
    request_uid,
    response,
)
from budgetops.apis.jsonbody import JsonError, read_json
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget, field_errors
from budgetops.engine.clock import Clock
from budgetops.engine.decisions import (
    RESERVING_REASONS,
    Decision,
    Reason,
    admit_risk,
    admit_trust,
)
from budgetops.engine.ledger import InvalidCharge, cancel, confirm
from budgetops.engine.rollover import summarize_risk
from budgetops.engine.verdicts import Subject
from budgetops.observability.events import EventRecorder, LogEvents
from budgetops.observability.metrics import AdmissionMetrics
from budgetops.store import BudgetStore, ChargeTimeout, NotFound, Unreadable

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

TAKE_BACK_SECONDS = 5.0
"""How long taking back a refused request's reservations may wait for each budget."""

RETRY_MESSAGE = (
    "BudgetOps could not charge this request before the API server's deadline; the request "
    "was not admitted. Please try again."
)

TRUST_VERDICTS: frozenset[Reason] = frozenset({"Exhausted", "Warned", "BreakGlass"})
"""TrustBudget decisions that get a verdict: denials, and what passed an exhausted budget
(break-glass, or a warn-mode budget that would have refused). Charges are audited as
movements."""

UNATTESTED: frozenset[Reason] = frozenset({"AlreadyCharged", "DryRun", "Gone"})
"""RiskBudget decisions without a verdict: a replay (its first decision has one), a dry run
(it records nothing; its denials carry the denial's reason, so the request's flag is
checked too) and a deleted budget."""

log = logging.getLogger("budgetops.webhook")

T = TypeVar("T")


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
    ) -> None:
        self.store = store
        self.attestor = attestor or Attestor()
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
            charges = classify(self.store.list(with_status=False), request, self.identity)
            decisions = await self._charge(charges, request, deadline)
        except Refused as refusal:
            self.metrics.admissions.labels("", "denied", "Refused").inc()
            return response(request.uid, allowed=False, message=str(refusal), code=400)
        denied = [f"{budget}: {d.message}" for budget, d in decisions if not d.allowed]
        warnings = [w for _, d in decisions for w in d.warnings]
        if denied:
            return response(request.uid, allowed=False, message=" ".join(denied))
        return response(request.uid, allowed=True, warnings=warnings)

    def _steps(self, charges: Classified, request: AdmissionRequest) -> list[_Step]:
        """One step per budget the request owes: TrustBudgets first, then RiskBudgets."""
        now = self.clock()
        steps = []
        for trust in charges.trust:

            def charge_trust(budget: Budget, settle: bool, c: TrustCharge = trust) -> Decision:
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
                if settle and decision.cost > 0:
                    confirm(budget.status, key=c.key, now=now)
                if not request.dry_run and decision.reason in TRUST_VERDICTS:
                    self.attestor.trust(
                        budget,
                        charge=c,
                        decision=decision,
                        subject=subject_of(request),
                        now=now,
                    )
                return decision

            steps.append(_Step(trust.budget, trust.key, charge_trust, trust.settle_now, now))
        for risk in charges.risk:
            subject = subject_of(request, risk.release.key)

            def charge_risk(
                budget: Budget, _: bool, c: RiskCharge = risk, subject: Subject = subject
            ) -> Decision:
                assert isinstance(budget, RiskBudget)
                decision = admit_risk(
                    budget.status,
                    budget.spec,
                    release=c.release,
                    now=now,
                    ttl=self.ttl,
                    dry_run=request.dry_run,
                )
                if not request.dry_run and decision.reason not in UNATTESTED:
                    self.attestor.risk(
                        budget, release=c.release, decision=decision, subject=subject, now=now
                    )
                return decision

            steps.append(_Step(risk.budget, risk.release.key, charge_risk, False, now))
        return steps

    async def _charge(
        self, charges: Classified, request: AdmissionRequest, deadline: float
    ) -> list[tuple[BudgetKey, Decision]]:
        """Charge every budget the request owes, or none: a request is admitted only if each
        admits it, and when one refuses (or fails), what the others reserved is taken back.
        Each decision comes with the budget that made it, so a denial can name it.

        Budgets are charged one after the other, each in its own compare-and-swap: there is
        no transaction across objects. A charge that must settle at once (a TokenRequest)
        settles in the last budget's write, and in the others' only once all admitted.
        """
        steps = self._steps(charges, request)
        decisions: list[tuple[BudgetKey, Decision]] = []
        taken: list[_Step] = []
        try:
            for index, step in enumerate(steps):
                settle = step.settle_now and index == len(steps) - 1
                try:
                    decision = await self._update(step.budget, step.change(settle), deadline)
                except NotFound:  # deleted since classification: it governs nothing now
                    decision = _gone(step.budget)
                except Unreadable as error:
                    log.warning("refused %s: %s", request.describe(), error)
                    raise Refused(
                        f"BudgetOps cannot charge this request to {step.budget}: the budget "
                        "does not read back, and what it governs is refused until it is fixed"
                    ) from error
                except InvalidCharge as error:
                    raise Refused(
                        f"BudgetOps cannot charge this request to {step.budget}: {error}."
                    ) from error
                decisions.append((step.budget, decision))
                if not decision.allowed:
                    break
                if decision.reason in RESERVING_REASONS:
                    taken.append(step)
            else:
                await self._settle([s for s in taken if s.settle_now and s is not steps[-1]])
                for step, (_, decision) in zip(steps, decisions, strict=True):
                    if decision.reason == "BreakGlass":
                        await asyncio.get_running_loop().run_in_executor(
                            None, self._announce_break_glass, step.budget, decision
                        )
                return decisions
        except BaseException:
            await asyncio.shield(self._take_back(taken))
            raise
        await self._take_back(taken)
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
        return decision

    async def _take_back(self, steps: list[_Step]) -> None:
        """Cancel the reservations of a request that was not admitted after all. Each gets
        its own short deadline: the request's may be spent. One that cannot be cancelled is
        logged; in a cluster the reconciler refunds it when its object never appears."""
        for step in steps:

            def undo(budget: Budget, key: str = step.key, now: datetime = step.now) -> bool:
                assert isinstance(budget, TrustBudget | RiskBudget)
                taken = cancel(budget.status, key=key, now=now) is not None
                if taken and isinstance(budget, RiskBudget):
                    summarize_risk(budget.status, budget.spec)
                return taken

            try:
                await self.store.update_status_async(
                    step.budget, undo, timeout=TAKE_BACK_SECONDS, needs_write=bool
                )
            except Exception as error:
                log.warning(
                    "could not take back %s's reservation %s of a refused request: %s",
                    step.budget,
                    step.key,
                    error,
                )

    async def _settle(self, steps: list[_Step]) -> None:
        """Confirm what must settle at once, once every budget admitted the request.

        The request is admitted by then, so a settle that fails is logged, not raised: its
        reservation has no witness, and the reconciler confirms it when it expires.
        """
        for step in steps:

            def settle(budget: Budget, key: str = step.key, now: datetime = step.now) -> bool:
                assert isinstance(budget, TrustBudget)
                return confirm(budget.status, key=key, now=now)

            try:
                await self.store.update_status_async(
                    step.budget, settle, timeout=TAKE_BACK_SECONDS, needs_write=bool
                )
            except Exception as error:
                log.warning(
                    "could not settle %s's charge %s at once; it is confirmed when its "
                    "reservation expires: %s",
                    step.budget,
                    step.key,
                    error,
                )

    def _announce_break_glass(self, key: BudgetKey, decision: Decision) -> None:
        """Every break-glass use is an Event too: people watch Events, not status lists."""
        try:
            budget = self.store.get(key)
        except NotFound:
            return
        self.events.emit(budget, type="Warning", reason="BreakGlass", message=decision.warnings[0])


@dataclass(frozen=True)
class _Step:
    """One budget's part of a request: where, under which key, and how it is charged."""

    budget: BudgetKey
    key: str
    charge: Callable[[Budget, bool], Decision]
    """charge(budget, settle): decide and reserve; with `settle`, confirm at once too."""
    settle_now: bool
    now: datetime

    def change(self, settle: bool) -> Callable[[Budget], Decision]:
        return lambda budget: self.charge(budget, settle)


def _gone(key: BudgetKey) -> Decision:
    return Decision(
        True,
        "Gone",
        Decimal(0),
        warnings=(f"{key} was deleted while this request was decided; it charged nothing",),
    )
