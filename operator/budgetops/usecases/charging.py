"""Charging: what a request owes in, decisions out. The one place a charge is defined.

A charge is classify → decide → reserve → attest → settle → take back. The entry points only
say what is owed, in plain inputs (budget keys, accounts, amounts, keys, a subject, dry run,
now): the webhook from an AdmissionReview (`admission/webhook.py`), the CLI from its flags
(`cli/budgets.py`). This service builds every status change a charge makes and hands it to
the store's `update_status` / `update_status_async` (which group-commits concurrent charges):
no other module builds one.

A decision that gets a verdict is attested inside the change that stores it, whoever asked:
a denial by the CLI is audited and signed like a denial by the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Generic, TypeVar

from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine.charges import Classified, Refused, RiskCharge, TrustCharge
from budgetops.engine.clock import Clock
from budgetops.engine.decisions import (
    RESERVING_REASONS,
    Decision,
    Reason,
    Release,
    admit_risk,
    admit_trust,
)
from budgetops.engine.ledger import InvalidCharge, cancel, confirm
from budgetops.engine.rollover import summarize_risk
from budgetops.engine.verdicts import Subject, content_digest
from budgetops.observability.events import EventRecorder, LogEvents
from budgetops.store import BudgetStore, ChargeTimeout, NotFound, Unreadable
from budgetops.usecases.attest import Attestor

if TYPE_CHECKING:  # the CLI charges without counting: it need not load prometheus_client
    from budgetops.observability.metrics import AdmissionMetrics

TAKE_BACK_SECONDS = 5.0
"""How long taking back a refused request's reservations may wait for each budget."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a synchronous charge of several budgets may take, when not told."""

OWED_MAX = 10_000
"""Failed-open charges kept for settling, at most: in memory, so a restart forgets them; past
this the oldest is dropped (logged and counted), so an outage cannot grow the webhook."""

RETRY_AFTER = 1.0
"""Seconds before the first retry of failed-open charges; doubled while the store does not
answer, up to RETRY_MAX."""

RETRY_MAX = 60.0

TRUST_VERDICTS: frozenset[Reason] = frozenset({"Exhausted", "Warned", "BreakGlass"})
"""TrustBudget decisions that get a verdict: denials, and what passed an exhausted budget
(break-glass, or a warn-mode budget that would have refused). Charges are audited as
movements."""

UNATTESTED: frozenset[Reason] = frozenset({"AlreadyCharged", "DryRun", "Gone"})
"""RiskBudget decisions without a verdict: a replay (its first decision has one), a dry run
(it records nothing; its denials carry the denial's reason, so the request's flag is
checked too) and a deleted budget."""

log = logging.getLogger("budgetops.charging")

Checking = TypeVar("Checking", RiskBudget, TrustBudget)

Decided = list[tuple[BudgetKey, Decision]]
"""Each decision with the budget that made it, so a denial can name it."""


def release_subject(namespace: str, release: Release) -> Subject:
    """A release named by the CLI (`consume`, `check`): what was judged is the release as
    declared, its unknowns included when it reports any (as a workload's annotations are
    part of its digest)."""
    declared: dict[str, object] = {
        "releaseId": release.key,
        "points": release.points,
        "changeClass": release.change_class,
    }
    if release.unknowns is not None:
        declared["unknowns"] = release.unknowns.to_predicate()
    return Subject(
        kind="Release",
        resource="releases",
        namespace=namespace,
        name=release.key,
        uid="",
        digest=content_digest(declared),
        release_id=release.key,
    )


def issuance_subject(*, account: str, key: str, ref: str, cost: Decimal | None) -> Subject:
    """An issuance charged by the CLI (`charge`): what was judged is the issuance as asked."""
    return Subject(
        kind="Issuance",
        resource="issuances",
        namespace="",
        name=ref,
        uid="",
        digest=content_digest(
            {
                "id": key,
                "account": account,
                "object": ref,
                "cost": None if cost is None else str(cost),
            }
        ),
    )


def _release_subject(subject: Subject, release_key: str) -> Subject:
    """The request's subject for one of its releases (`release:ID` keys name a release)."""
    release_id = release_key.removeprefix("release:") if release_key.startswith("release:") else ""
    return replace(subject, release_id=release_id)


@dataclass(frozen=True)
class Checked(Generic[Checking]):
    """A dry run: the budget as it decided, the decision, and when."""

    budget: Checking
    decision: Decision
    now: datetime


class Changes:
    """The status changes a charge makes, each a function of the budget for `update_status`
    (it may run more than once when writers race). The only code that builds one: the
    service below writes them, and so may a caller that batches its own writes (the store
    contract tests, the benchmarks). `now` None: the clock when the change runs."""

    def __init__(self, *, clock: Clock, ttl: timedelta, attestor: Attestor | None = None) -> None:
        self.clock = clock
        self.ttl = ttl
        self.attestor = attestor or Attestor()

    def trust(
        self,
        charge: TrustCharge,
        *,
        subject: Subject | None = None,
        dry_run: bool = False,
        settle: bool = False,
        now: datetime | None = None,
        ttl: timedelta | None = None,
        by_hand: bool = False,
        own_cost: bool = False,
    ) -> Callable[[Budget], Decision]:
        """Decide and reserve an issuance; with `settle`, confirm it at once; attest what
        gets a verdict. `by_hand`: the account was typed, so one the budget cannot name is
        refused as bad input; `own_cost`: the cost is the budget's own (`spec.cost`)."""

        def change(budget: Budget) -> Decision:
            assert isinstance(budget, TrustBudget)
            at = self.clock() if now is None else now
            c = charge
            if by_hand and not budget.spec.renders(c.account):
                raise ValueError(
                    f"--account {c.account!r} is not an account of {c.budget}: its "
                    f"accounts are named {budget.spec.account_key}"
                )
            if own_cost:
                c = replace(c, cost=budget.spec.cost)
            decision = admit_trust(
                budget.status,
                budget.spec,
                account=c.account,
                cost=c.cost,
                key=c.key,
                ref=c.ref,
                witness=c.witness,
                now=at,
                ttl=self.ttl if ttl is None else ttl,
                dry_run=dry_run,
                break_glass=c.break_glass,
            )
            if settle and decision.cost > 0:
                confirm(budget.status, key=c.key, now=at)
            if not dry_run and decision.reason in TRUST_VERDICTS:
                self.attestor.trust(
                    budget,
                    charge=c,
                    decision=decision,
                    subject=subject
                    or issuance_subject(account=c.account, key=c.key, ref=c.ref, cost=c.cost),
                    now=at,
                )
            return decision

        return change

    def risk(
        self,
        charge: RiskCharge,
        *,
        subject: Subject | None = None,
        dry_run: bool = False,
        settle: bool = False,
        now: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> Callable[[Budget], Decision]:
        """Decide and reserve a release, attest it (whatever was decided); with `settle`,
        confirm it at once."""

        def change(budget: Budget) -> Decision:
            assert isinstance(budget, RiskBudget)
            at = self.clock() if now is None else now
            decision = admit_risk(
                budget.status,
                budget.spec,
                release=charge.release,
                now=at,
                ttl=self.ttl if ttl is None else ttl,
                dry_run=dry_run,
            )
            if not dry_run and decision.reason not in UNATTESTED:
                self.attestor.risk(
                    budget,
                    release=charge.release,
                    decision=decision,
                    subject=subject
                    or release_subject(budget.metadata.namespace or "", charge.release),
                    now=at,
                )
            if settle and decision.cost > 0:
                confirm(budget.status, key=charge.release.key, now=at)
                summarize_risk(budget.status, budget.spec)
            return decision

        return change

    @staticmethod
    def undo(key: str, now: datetime) -> Callable[[Budget], bool]:
        def undo(budget: Budget) -> bool:
            assert isinstance(budget, TrustBudget | RiskBudget)
            taken = cancel(budget.status, key=key, now=now) is not None
            if taken and isinstance(budget, RiskBudget):
                summarize_risk(budget.status, budget.spec)
            return taken

        return undo

    @staticmethod
    def confirm(key: str, now: datetime) -> Callable[[Budget], bool]:
        def settle(budget: Budget) -> bool:
            assert isinstance(budget, TrustBudget)
            return confirm(budget.status, key=key, now=now)

        return settle


class ChargingService:
    """Charges budgets in a store: the webhook's and the CLI's charges, one definition."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        clock: Clock,
        ttl: timedelta,
        attestor: Attestor | None = None,
        metrics: AdmissionMetrics | None = None,
        events: EventRecorder | None = None,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self.attestor = attestor or Attestor()
        self.changes = Changes(clock=clock, ttl=ttl, attestor=self.attestor)
        self.metrics = metrics
        """Counts each budget's decision when given (the webhook's `admissions`)."""
        self.events: EventRecorder = events or LogEvents()
        self.retry_after = retry_after
        self.owed: deque[_Step] = deque()
        """Failed-open charges of admitted requests, not yet settled (at most OWED_MAX)."""
        self.retrying: asyncio.Task[None] | None = None
        """The background retry of what is owed, while there is any."""

    # A request's charges, all or nothing across budgets.

    def _steps(self, charges: Classified, subject: Subject, dry_run: bool) -> list[_Step]:
        """One step per budget the request owes: TrustBudgets first, then RiskBudgets."""
        now = self.clock()
        steps = []
        for trust in charges.trust:

            def charge_trust(
                settle: bool, at: datetime | None, c: TrustCharge = trust
            ) -> Callable[[Budget], Decision]:
                return self.changes.trust(
                    c, subject=subject, dry_run=dry_run, settle=settle, now=at, ttl=self.ttl
                )

            steps.append(
                _Step(trust.budget, trust.key, charge_trust, trust.settle_now, now, trust.fail_open)
            )
        for risk in charges.risk:
            release_subject = _release_subject(subject, risk.release.key)

            def charge_risk(
                _: bool, at: datetime | None, c: RiskCharge = risk, s: Subject = release_subject
            ) -> Callable[[Budget], Decision]:
                return self.changes.risk(
                    c, subject=s, dry_run=dry_run, settle=c.settle_now, now=at, ttl=self.ttl
                )

            steps.append(
                _Step(risk.budget, risk.release.key, charge_risk, False, now, risk.fail_open)
            )
        return steps

    async def charge_async(
        self,
        charges: Classified,
        *,
        subject: Subject,
        dry_run: bool,
        deadline: float,
        what: str = "a request",
    ) -> Decided:
        """Charge every budget the request owes, or none: a request is admitted only if each
        admits it, and when one refuses (or fails), what the others reserved is taken back.
        `deadline` is on `time.monotonic()`; past it, ChargeTimeout, unless the budget
        whose store did not answer is `failOpen`: then that budget admits the request
        uncharged (`FailedOpen`) and, once the request is admitted, the charge is owed and
        retried in the background (`settle_owed`). `what` names the request in the log.
        Raises Refused for a budget that cannot be charged.

        Budgets are charged one after the other, each in its own compare-and-swap: there is
        no transaction across objects. A charge that must settle at once (a TokenRequest)
        settles in the last budget's write, and in the others' only once all admitted.
        """
        steps = self._steps(charges, subject, dry_run)
        decisions: Decided = []
        taken: list[_Step] = []
        try:
            for index, step in enumerate(steps):
                settle = step.settle_now and index == len(steps) - 1
                decision = await self._charge_step(step, settle, deadline, what, dry_run)
                decisions.append((step.budget, decision))
                if not decision.allowed:
                    break
                if decision.reason in RESERVING_REASONS:
                    taken.append(step)
            else:
                await self._settle([s for s in taken if s.settle_now and s is not steps[-1]])
                owed = []
                for step, (_, decision) in zip(steps, decisions, strict=True):
                    if decision.reason == "BreakGlass":
                        await asyncio.get_running_loop().run_in_executor(
                            None, self._announce_break_glass, step.budget, decision
                        )
                    elif decision.reason == "FailedOpen" and not dry_run:
                        owed.append(step)
                self._owe(owed)
                return decisions
        except BaseException:
            await asyncio.shield(self._take_back(taken))
            raise
        await self._take_back(taken)
        return decisions

    async def _charge_step(
        self, step: _Step, settle: bool, deadline: float, what: str, dry_run: bool
    ) -> Decision:
        """One budget's decision on the request; a budget it cannot be charged to is Refused,
        and one whose store does not answer in time a ChargeTimeout unless it fails open."""
        try:
            return await self._update(step.budget, step.change(settle, step.now), deadline)
        except ChargeTimeout as error:
            if not step.fail_open:
                raise
            return self._fail_open(step, what, error, dry_run=dry_run)
        except NotFound:  # deleted since classification: it governs nothing now
            return _gone(step.budget)
        except Unreadable as error:
            log.warning("refused %s: %s", what, error)
            raise Refused(
                f"BudgetOps cannot charge this request to {step.budget}: the budget "
                "does not read back, and what it governs is refused until it is fixed"
            ) from error
        except InvalidCharge as error:
            raise Refused(
                f"BudgetOps cannot charge this request to {step.budget}: {error}."
            ) from error

    def charge(
        self,
        charges: Classified,
        *,
        subject: Subject,
        dry_run: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Decided:
        """`charge_async` for a caller without an event loop (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        return asyncio.run(
            self.charge_async(charges, subject=subject, dry_run=dry_run, deadline=deadline)
        )

    async def _update(
        self, key: BudgetKey, change: Callable[[Budget], Decision], deadline: float
    ) -> Decision:
        """Charge one budget and count the outcome. Only charges and break-glass uses are
        written (and what they attest): denials, replays and dry runs leave the ledger as
        it was."""
        decision = await self.store.update_status_async(
            key,
            change,
            timeout=max(deadline - time.monotonic(), 0.0),
            needs_write=lambda decided: decided.changes_ledger,
        )
        self._count(key, decision)
        return decision

    def _fail_open(
        self, step: _Step, what: str, error: ChargeTimeout, *, dry_run: bool
    ) -> Decision:
        """A failOpen budget whose store did not answer in time: it admits the request
        uncharged, logged (as key=value pairs a log search can filter on) and counted."""
        log.warning(
            "failed open: budget=%s kind=%s key=%s request=%s dry_run=%s cause=%s",
            step.budget,
            step.budget.kind,
            step.key,
            what,
            dry_run,
            error,
        )
        decision = Decision(
            True,
            "FailedOpen",
            Decimal(0),
            warnings=(
                f"{step.budget} could not be reached in time and is set to failOpen: this "
                "request was admitted without being charged to it"
                + ("" if dry_run else "; the charge is retried once the budget answers"),
            ),
        )
        self._count(step.budget, decision)
        if self.metrics is not None:
            self.metrics.failed_open.labels(step.budget.kind, _named(step.budget)).inc()
        return decision

    def _owe(self, steps: list[_Step]) -> None:
        """Keep an admitted request's failed-open charges, and retry them in the background
        until the store takes them."""
        if not steps:
            return
        for step in steps:
            if len(self.owed) >= OWED_MAX:
                dropped = self.owed.popleft()
                log.warning(
                    "dropped failed-open charge %s of %s unsettled: %d are owed already",
                    dropped.key,
                    dropped.budget,
                    OWED_MAX,
                )
                self._count_settled(dropped, "dropped")
            self.owed.append(step)
        if self.retrying is None or self.retrying.done():
            self.retrying = asyncio.get_running_loop().create_task(self._retry_owed())

    async def _retry_owed(self) -> None:
        delay = self.retry_after
        while True:
            await asyncio.sleep(delay)
            if await self.settle_owed():
                return
            delay = min(delay * 2, RETRY_MAX)

    async def settle_owed(self) -> bool:
        """Charge the failed-open charges owed, oldest first, each under its own idempotency
        key (one the store took before it timed out is not charged twice); stop at the
        first the store still cannot take. True when nothing is owed any more.

        The objects were admitted: a charge the balance now refuses is logged and counted,
        never undone. One settling at once (a TokenRequest) is confirmed; another reserves
        now, for the reconciler to confirm when it sees its object, as at admission."""
        while self.owed:
            step = self.owed.popleft()  # taken while tried: no other retry takes it too
            try:
                decision = await self.store.update_status_async(
                    step.budget,
                    step.change(step.settle_now, None),
                    timeout=TAKE_BACK_SECONDS,
                    needs_write=lambda decided: decided.changes_ledger,
                )
            except ChargeTimeout:
                self.owed.appendleft(step)
                return False
            except asyncio.CancelledError:  # stopped mid-try: still owed
                self.owed.appendleft(step)
                raise
            except NotFound:
                outcome = "gone"
            except Exception as error:  # unreadable, or the charge itself is invalid now
                log.warning(
                    "cannot settle failed-open charge %s of %s: %s", step.key, step.budget, error
                )
                outcome = "failed"
            else:
                outcome = "settled" if decision.allowed else "refused"
                if not decision.allowed:
                    log.warning(
                        "failed-open charge %s of %s was refused when settled, after its "
                        "request was admitted: %s",
                        step.key,
                        step.budget,
                        decision.message,
                    )
            self._count_settled(step, outcome)
        return True

    async def stop_retrying(self) -> None:
        """At shutdown: one last try at what is owed (bounded), then say what is forgotten:
        owed charges live in this process's memory only."""
        if self.retrying is not None:
            self.retrying.cancel()
        if not self.owed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settle_owed(), TAKE_BACK_SECONDS)
        if self.owed:
            log.warning(
                "stopping with %d failed-open charges unsettled (%s): they are forgotten, "
                "and their requests stay uncharged",
                len(self.owed),
                ", ".join(sorted({str(step.budget) for step in self.owed})),
            )

    def _count_settled(self, step: _Step, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.failed_open_settled.labels(
                step.budget.kind, _named(step.budget), outcome
            ).inc()

    def _count(self, key: BudgetKey, decision: Decision) -> None:
        if self.metrics is not None:
            verdict = "allowed" if decision.allowed else "denied"
            self.metrics.admissions.labels(key.kind, verdict, decision.reason).inc()

    async def _take_back(self, steps: list[_Step]) -> None:
        """Cancel the reservations of a request that was not admitted after all. Each gets
        its own short deadline: the request's may be spent. One that cannot be cancelled is
        logged; in a cluster the reconciler refunds it when its object never appears."""
        await self._each(
            steps,
            lambda step: self.changes.undo(step.key, step.now),
            "could not take back %s's reservation %s of a refused request: %s",
        )

    async def _settle(self, steps: list[_Step]) -> None:
        """Confirm what must settle at once, once every budget admitted the request.

        The request is admitted by then, so a settle that fails is logged, not raised: its
        reservation has no witness, and the reconciler confirms it when it expires.
        """
        await self._each(
            steps,
            lambda step: self.changes.confirm(step.key, step.now),
            "could not settle %s's charge %s at once; it is confirmed when its reservation "
            "expires: %s",
        )

    async def _each(
        self,
        steps: list[_Step],
        change: Callable[[_Step], Callable[[Budget], object]],
        failed: str,
    ) -> None:
        """Write `change(step)` to each step's budget in turn, each within its own short
        deadline; a failure is logged (`failed` takes the budget, the key and the error)."""
        for step in steps:
            try:
                await self.store.update_status_async(
                    step.budget, change(step), timeout=TAKE_BACK_SECONDS, needs_write=bool
                )
            except Exception as error:
                log.warning(failed, step.budget, step.key, error)

    def _announce_break_glass(self, key: BudgetKey, decision: Decision) -> None:
        """Every break-glass use is an Event too: people watch Events, not status lists."""
        try:
            budget = self.store.get(key)
        except NotFound:
            return
        self.events.emit(budget, type="Warning", reason="BreakGlass", message=decision.warnings[0])

    # The CLI's charges: one budget, settled at once (no object will be watched). A budget
    # that is missing is NotFound and bad input is ValueError, as the CLI reports them.

    def charge_account(
        self,
        budget: str,
        *,
        account: str,
        cost: Decimal | None,
        key: str,
        ref: str,
        ttl: timedelta,
        dry_run: bool = False,
    ) -> tuple[BudgetKey, Decision]:
        """Charge one issuance to an account of a TrustBudget (its own cost unless `cost`)."""
        where = BudgetKey("TrustBudget", budget)
        charge = TrustCharge(where, account, cost or Decimal(0), key, ref, settle_now=True)
        subject = issuance_subject(account=account, key=key, ref=ref, cost=cost)
        change = self.changes.trust(
            charge,
            subject=subject,
            dry_run=dry_run,
            settle=True,
            now=self.clock(),
            ttl=ttl,
            by_hand=True,
            own_cost=cost is None,
        )
        decision = self.store.update_status(
            where, change, needs_write=lambda decided: decided.changes_ledger
        )
        self._count(where, decision)
        return where, decision

    def consume(
        self,
        where: BudgetKey,
        release: Release,
        *,
        namespace: str,
        ttl: timedelta,
        dry_run: bool = False,
    ) -> Decision:
        """Charge one release's points to a RiskBudget, confirmed at once."""
        change = self.changes.risk(
            RiskCharge(where, release, settle_now=True),
            subject=release_subject(namespace, release),
            dry_run=dry_run,
            settle=True,
            now=self.clock(),
            ttl=ttl,
        )
        decision = self.store.update_status(
            where, change, needs_write=lambda decided: decided.changes_ledger
        )
        self._count(where, decision)
        return decision

    def check_account(
        self, budget: str, *, account: str, cost: Decimal | None, key: str, ttl: timedelta
    ) -> Checked[TrustBudget]:
        """May this account issue? Decided as `charge_account` would (its own cost unless
        `cost`), as a dry run on that one account: charging, attesting and writing nothing."""
        where = BudgetKey("TrustBudget", budget)
        found = self.store.get(where, account=account)
        assert isinstance(found, TrustBudget)
        now = self.clock()
        charge = TrustCharge(where, account, found.spec.cost if cost is None else cost, key, key)
        change = self.changes.trust(
            charge, dry_run=True, now=now, ttl=ttl, by_hand=True, own_cost=False
        )
        return Checked(found, change(found), now)

    def check(self, where: BudgetKey, release: Release, *, ttl: timedelta) -> Checked[RiskBudget]:
        """May this release ship? Decided as admission would, as a dry run: charging,
        attesting and writing nothing."""
        budget = self.store.get(where)
        assert isinstance(budget, RiskBudget)
        now = self.clock()
        change = self.changes.risk(
            RiskCharge(where, release),
            subject=release_subject(budget.metadata.namespace or "", release),
            dry_run=True,
            settle=False,
            now=now,
            ttl=ttl,
        )
        return Checked(budget, change(budget), now)


@dataclass(frozen=True)
class _Step:
    """One budget's part of a request: where, under which key, and how it is charged."""

    budget: BudgetKey
    key: str
    change: Callable[[bool, datetime | None], Callable[[Budget], Decision]]
    """change(settle, now): the status change that decides and reserves; with `settle`,
    confirms at once too; `now` None: when it runs (a failed-open charge's retry)."""
    settle_now: bool
    now: datetime
    fail_open: bool = False


def _named(key: BudgetKey) -> str:
    """A budget as a metric names it: `namespace/name`, or `name` when cluster-scoped."""
    return f"{key.namespace}/{key.name}" if key.namespace else key.name


def _gone(key: BudgetKey) -> Decision:
    return Decision(
        True,
        "Gone",
        Decimal(0),
        warnings=(f"{key} was deleted while this request was decided; it charged nothing",),
    )
