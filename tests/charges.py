"""Charging a TrustBudget in tests: the status change admission would make for one issuance."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from budgetops.apis.ledger import Witness
from budgetops.apis.resources import Budget, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, admit_trust


def charging(
    uid: str,
    *,
    account: str = "user:alice",
    now: datetime | None = None,
    ttl: timedelta = timedelta(minutes=5),
    ref: str | None = None,
    witness: Witness | None = None,
    dry_run: bool = False,
) -> Callable[[Budget], Decision]:
    """A change that charges the budget's cost to `account` under idempotency key `uid`, at
    `now` (the wall clock when it runs, if not given): for `update_status`, or to call on a
    budget directly."""

    def change(budget: Budget) -> Decision:
        assert isinstance(budget, TrustBudget)
        return admit_trust(
            budget.status,
            budget.spec,
            account=account,
            cost=budget.spec.cost,
            key=uid,
            ref=uid if ref is None else ref,
            now=system_clock() if now is None else now,
            ttl=ttl,
            witness=witness,
            dry_run=dry_run,
        )

    return change
