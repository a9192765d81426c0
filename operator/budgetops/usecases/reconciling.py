"""One budget's reconcile, end to end: look for witnesses, run the pure step, then tell.

The reconcile use case: what confirms, refunds, resets, rolls windows and expires leases,
in one `update_status` per pass. Everything here is synchronous and kopf-free so tests can
drive it directly; the entry-point machinery in `reconciling/` (the scheduler, the kopf
peering, the embedded ledger's version poll, the BudgetLease mirror) decides when to call it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from budgetops.apis.notifications import Notifications
from budgetops.apis.resources import Budget, BudgetApproval, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine import breakglass
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.clock import Clock
from budgetops.engine.notices import Notice
from budgetops.engine.reconcile import (
    Outcome,
    Seen,
    awaiting_witness,
    next_due,
    next_sample_due,
    reconcile_risk,
    reconcile_trust,
)
from budgetops.observability.events import EventRecorder
from budgetops.observability.metrics import ReconcileMetrics
from budgetops.store.base import BudgetStore, NotFound

log = logging.getLogger("budgetops.reconciler")


class ObjectLooker(Protocol):
    def look(self, paths: Sequence[str]) -> Seen: ...


class LeaseMirror(Protocol):
    """Keeps BudgetLease objects in step with a TrustBudget's leases (`reconciling/leases.py`)."""

    def sync(self, budget: TrustBudget) -> None: ...

    def due(self, budget: TrustBudget) -> timedelta | None: ...


class ApprovalDesk(Protocol):
    """BudgetApproval objects (`adapters/approvals.py`): those of a TrustBudget the operator
    has not answered yet, and where its answer goes (the object's status)."""

    def waiting(self, budget: str) -> list[BudgetApproval]: ...

    def budget_of(self, key: BudgetKey) -> str | None: ...

    def answer(self, approval: BudgetApproval, *, recorded: bool, message: str) -> None: ...


class Announcer(Protocol):
    def submit(
        self, *, secret_namespace: str, notifications: Notifications, notices: Sequence[Notice]
    ) -> None: ...


def budget_name(key: BudgetKey) -> str:
    """How notices name a budget: `RiskBudget payments/checkout`, `TrustBudget certs`."""
    where = f"{key.namespace}/" if key.namespace else ""
    return f"{key.kind} {where}{key.name}"


@dataclass
class Timing:
    """How often to look: `poll` while reservations wait for their objects, at most `idle`
    between looks otherwise. With the store's versions at hand, an idle look at a budget
    nobody changed is a lookup, not a reconcile (see `Reconciler.versions`)."""

    poll: timedelta = timedelta(seconds=2)
    idle: timedelta = timedelta(seconds=30)


@dataclass
class Reconciler:
    """Keeps budgets current through the same compare-and-swap store as admission."""

    store: BudgetStore
    objects: ObjectLooker | None
    """Where witnesses are looked up; None where nobody can look (the embedded ledger):
    reservations are then confirmed when they expire."""
    clock: Clock
    events: EventRecorder
    metrics: ReconcileMetrics
    announcer: Announcer | None = None
    operator_namespace: str = "budgetops-system"
    timing: Timing = field(default_factory=Timing)
    samples: dict[BudgetKey, UsageSamples] = field(default_factory=dict)
    write_timeout: float = 60.0
    """A reconcile is no admission: it may wait out a busy API server."""
    versions: Callable[[BudgetKey], str | None] | None = None
    """The store's current resourceVersion of a budget, read without parsing it (KubeStore's
    cache). With it, a wake for a budget nobody changed since this reconciler left it, and
    with nothing due yet, costs a lookup instead of a parse. The watch reports each of the
    reconciler's own writes, which would otherwise make every budget due twice, and idle
    looks at ten thousand unchanged budgets would otherwise parse each every `idle`."""
    leases: LeaseMirror | None = None
    """Where BudgetLease objects are kept in step with the ledger's leases (in a cluster)."""
    approvals: ApprovalDesk | None = None
    """Where BudgetApproval objects wait to be recorded into their request (in a cluster)."""
    left: dict[BudgetKey, tuple[str, datetime | None]] = field(default_factory=dict)
    """Per budget: the resourceVersion this reconciler left it at, and when something in it
    next falls due by itself (None: nothing does)."""

    def reconcile(self, key: BudgetKey) -> timedelta | None:
        """Reconcile `key` once; returns how long until it wants to run again (None: gone)."""
        now = self.clock()
        waiting = []
        if self.approvals is not None and key.kind == "TrustBudget":
            waiting = self.approvals.waiting(key.name)
        version = self.versions(key) if self.versions else None
        left = self.left.get(key)
        if not waiting and version is not None and left is not None and left[0] == version:
            due = left[1]
            if due is None or now < due:
                return self._wait(due, now)
        try:
            budget = self.store.get(key)
        except NotFound:
            self.samples.pop(key, None)
            self.left.pop(key, None)
            self._answer(waiting, [breakglass.Approved(False, f"there is no {key}")] * len(waiting))
            return None
        if not isinstance(budget, TrustBudget | RiskBudget):
            return None
        seen: Seen | None = None
        if self.objects is not None:
            paths = awaiting_witness(budget.status)
            seen = self.objects.look(paths) if paths else {}
        name = budget_name(key)

        def change(
            fresh: Budget,
        ) -> tuple[Outcome, Budget, list[breakglass.Approved], datetime | None]:
            generation = fresh.metadata.generation
            answers = []
            if isinstance(fresh, TrustBudget):
                answers = [
                    breakglass.approve(
                        fresh.status,
                        fresh.spec,
                        budget=key.name,
                        request_id=approval.spec.request,
                        approver=approval.spec.approver,
                        groups=approval.spec.groups,
                        now=now,
                    )
                    for approval in waiting
                ]
                outcome = reconcile_trust(
                    fresh.status,
                    fresh.spec,
                    budget=name,
                    generation=generation,
                    now=now,
                    seen=seen,
                    samples=self.samples.setdefault(key, UsageSamples()),
                )
            else:
                assert isinstance(fresh, RiskBudget)
                outcome = reconcile_risk(
                    fresh.status, fresh.spec, budget=name, generation=generation, now=now, seen=seen
                )
            # When it is next due is read here, from the state this change decided on: once
            # `update_status` returns, a store may already be charging that same object in
            # its next batch (the embedded ledger keeps it as the next snapshot).
            assert isinstance(fresh, TrustBudget | RiskBudget)
            return outcome, fresh, answers, self._due(fresh, now)

        def needs_write(
            decided: tuple[Outcome, Budget, list[breakglass.Approved], datetime | None],
        ) -> bool:
            """A change, or audit records a command left for the operator to publish (an
            approval recorded queued one, so it is written too)."""
            outcome, fresh, _, _ = decided
            return outcome.changed or bool(getattr(fresh.status, "audit_held", None))

        try:
            outcome, kept, answers, due = self.store.update_status(
                key, change, timeout=self.write_timeout, needs_write=needs_write
            )
        except NotFound:
            self.left.pop(key, None)
            return None
        assert isinstance(kept, TrustBudget | RiskBudget)
        self._answer(waiting, answers)  # once the approvals they answer are stored
        self._tell(kept, outcome)  # the budget the outcome was decided on, spec included
        if self.leases is not None and isinstance(kept, TrustBudget):
            self.leases.sync(kept)
            held_back = self.leases.due(kept)  # a sync it just put off: try it again then
            if held_back is not None:
                due = min(d for d in (due, now + held_back) if d is not None)
        if kept.metadata.resource_version is not None:
            self.left[key] = (kept.metadata.resource_version, due)
        return self._wait(due, now)

    def _answer(self, waiting: list[BudgetApproval], answers: list[breakglass.Approved]) -> None:
        """Say on each BudgetApproval whether it was counted; one that cannot be told is
        logged, and answered again on the next pass (recording it twice counts it once)."""
        desk = self.approvals
        for approval, answer in zip(waiting, answers, strict=True):
            assert desk is not None  # only a desk has approvals waiting
            try:
                desk.answer(approval, recorded=answer.recorded, message=answer.message)
            except Exception as error:
                log.warning("could not answer BudgetApproval %s: %s", approval.metadata.name, error)

    def _due(self, budget: TrustBudget | RiskBudget, now: datetime) -> datetime | None:
        """When `budget`, as reconciled at `now`, next needs a reconcile though nobody
        changes it: a reset or window end, a reservation's expiry, the next witness poll, a
        usage reading that came too soon to keep, or, while a rapid-depletion alert is up,
        the next idle look (the alert clears as usage ages out of the reconciler's memory,
        which no status field shows)."""
        dues = [next_due(budget.status)]
        if self.objects is not None and awaiting_witness(budget.status):
            dues.append(now + self.timing.poll)
        if isinstance(budget, TrustBudget):
            samples = self.samples.get(BudgetKey.of(budget), UsageSamples())
            dues.append(next_sample_due(budget.status, budget.spec, samples))
            dues.append(breakglass.next_deadline(budget.status))
            if any("RapidDepletion" in raised for raised in budget.status.alerting.values()):
                dues.append(now + self.timing.idle)
        return min((due for due in dues if due is not None), default=None)

    def _wait(self, due: datetime | None, now: datetime) -> timedelta:
        """Until the next look: at `due`, and no later than `idle` from `now`."""
        if due is None:
            return self.timing.idle
        return min(self.timing.idle, max(due - now, timedelta(0)))

    def _tell(self, budget: TrustBudget | RiskBudget, outcome: Outcome) -> None:
        """Events, metrics and notifications, after the status that caused them is written."""
        kind = budget.kind
        for label, count in (
            ("confirmed", outcome.confirmed),
            ("refunded", outcome.refunded),
            ("unverified", outcome.unverified),
        ):
            if count:
                self.metrics.reservations.labels(kind, label).inc(count)
        for notice in outcome.notices:
            self.metrics.transitions.labels(kind, notice.reason).inc()
            message = " ".join((notice.summary, *notice.details))
            self.events.emit(
                budget, type=notice.event_type, reason=notice.reason, message=message, at=notice.at
            )
        notifications = budget.spec.notifications
        if outcome.notices and notifications.channels and self.announcer is not None:
            self.announcer.submit(
                secret_namespace=budget.metadata.namespace or self.operator_namespace,
                notifications=notifications,
                notices=outcome.notices,
            )
