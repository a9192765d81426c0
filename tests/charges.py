"""Charging in tests: the status change admission would make for one issuance or release,
as `usecases.charging.Changes` builds it (the only place a charge is built)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from budgetops.apis.ledger import Witness
from budgetops.apis.resources import Budget, BudgetKey
from budgetops.engine.charges import RiskCharge, TrustCharge
from budgetops.engine.clock import Clock, system_clock
from budgetops.engine.decisions import Decision, Release
from budgetops.usecases.charging import Changes


def charging(
    uid: str,
    *,
    account: str = "user:alice",
    now: datetime | None = None,
    ttl: timedelta = timedelta(minutes=5),
    ref: str | None = None,
    witness: Witness | None = None,
    dry_run: bool = False,
    cost: Decimal | None = None,
) -> Callable[[Budget], Decision]:
    """A change that charges `cost` (the budget's own, if not given) to `account` under
    idempotency key `uid`, at `now` (the wall clock when it runs, if not given): for
    `update_status`, or to call on a budget directly."""
    charge = TrustCharge(
        BudgetKey("TrustBudget", ""),  # the change is handed its budget; the key names none
        account=account,
        cost=Decimal(0) if cost is None else cost,
        key=uid,
        ref=uid if ref is None else ref,
        witness=witness,
    )
    changes = Changes(clock=system_clock, ttl=ttl)
    return changes.trust(charge, now=now, dry_run=dry_run, own_cost=cost is None)


def shipping(
    release: Release,
    *,
    now: datetime | None = None,
    ttl: timedelta = timedelta(minutes=5),
    clock: Clock = system_clock,
) -> Callable[[Budget], Decision]:
    """A change that charges `release` to a RiskBudget as admission would (attested, not
    settled), at `now` (`clock()` when it runs, if not given): for `update_status`, or to
    call on a budget directly."""
    changes = Changes(clock=clock, ttl=ttl)
    return changes.risk(RiskCharge(BudgetKey("RiskBudget", ""), release), now=now)
