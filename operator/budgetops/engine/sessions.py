"""Session limits: what a runtime is told about its calls, and the warnings it is sent.

A budget's `spec.sessions` caps one call's cost and names a share of a lease or an account
past which the runtime is warned. The cap is the runtime's to keep before a call (the lease
API sees a call only once it was made and paid for, so it counts a report above the cap and
flags it); the warnings ride on the lease API's answers so that the runtime, not only an
operator, hears that its money is running out.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.ledger import Account, LeaseHold
from budgetops.apis.trustbudget import Sessions

HUNDRED = Decimal(100)


Scope = Literal["lease", "account"]


@dataclass(frozen=True)
class UsageWarning:
    """A lease or an account at or past its budget's warning share."""

    scope: Scope
    percent_used: Decimal
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "percent_used": str(self.percent_used),
            "message": self.message,
        }


def _percent(used: Decimal, of: Decimal) -> Decimal:
    return (used * HUNDRED / of).quantize(Decimal("0.1")) if of > 0 else HUNDRED


def warnings(
    sessions: Sessions, *, lease_id: str, hold: LeaseHold, account: str, of: Account
) -> list[UsageWarning]:
    """The warnings due once a report was counted: the lease's spending against what it was
    granted, the account's against its allocation, each at or past `warn_at_percent`."""
    share = sessions.warn_at_percent
    if share is None:
        return []
    lease = f"{lease_id} has spent {hold.spent:.2f} of the {hold.granted:.2f} USD it was granted"
    mine = f"{account} has spent {of.spent:.2f} of its {of.allocation:.2f} USD this window"
    found = [
        _past(share, "lease", _percent(hold.spent, hold.granted), lease),
        _past(share, "account", _percent(of.spent, of.allocation), mine),
    ]
    return [warning for warning in found if warning is not None]


def _past(share: int, scope: Scope, percent: Decimal, said: str) -> UsageWarning | None:
    """A warning that `said`, if `percent` is at least `share`."""
    if percent < share:
        return None
    return UsageWarning(scope, percent, f"{said} ({percent}%; the budget warns at {share}%)")


def over_cap(sessions: Sessions, costs: dict[str, Decimal]) -> list[str]:
    """The request ids of reported calls that cost more than one call may (sorted)."""
    cap = sessions.max_call_cost
    if cap is None:
        return []
    return sorted(request for request, cost in costs.items() if cost > cap)


def lease_terms(sessions: Sessions) -> dict[str, Any]:
    """What a lease's grant tells the runtime of its calls' limits (nothing when unset)."""
    terms: dict[str, Any] = {}
    if sessions.max_call_cost is not None:
        terms["max_call_cost"] = sessions.max_call_cost
    if sessions.warn_at_percent is not None:
        terms["warn_at_percent"] = sessions.warn_at_percent
    return terms
