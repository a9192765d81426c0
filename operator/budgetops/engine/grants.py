"""Grants: extra allocation for one account until a time, given by a person with a reason. Pure.

A TrustBudget account's allocation is its spec's plus the grants that last: `rollover`'s
`trust_account` follows both, so an expired grant drops out on the account's next touch. A
RiskBudget's service account takes a grant's amount when it is given and gives it back at
expiry, which `roll_risk_window` (admission and the reconciler both call it) applies first.
Either way the allocation never drops below what is already committed (`ledger.resize`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from budgetops.apis.common import MAX_AMOUNT, format_time
from budgetops.apis.ledger import GRANT_LONGEST, GRANTS_MAX, KEY_MAX, REASON_MAX, Grant, Ledger
from budgetops.engine.audit import AuditAction, note
from budgetops.engine.ledger import InvalidCharge, check_name

ZERO = Decimal(0)


def granted(ledger: Ledger, account: str, now: datetime) -> Decimal:
    """What the grants that last at `now` add to `account` (nothing, at the cost of one
    test, for the budgets that hold none)."""
    if not ledger.grants:
        return ZERO
    return sum(
        (g.amount for g in ledger.grants if g.account == account and now < g.expires_at), ZERO
    )


def give(ledger: Ledger, grant: Grant, *, now: datetime) -> None:
    """Record `grant` and audit it; the caller then resizes the account. Refuses (changing
    nothing) what could not be stored and read back, or would outgrow GRANTS_MAX."""
    check_name(grant.account, "account", KEY_MAX)
    if not grant.by or not grant.reason.strip():
        raise InvalidCharge("a grant needs who gives it and why")
    check_name(grant.by, "grantor", KEY_MAX)
    check_name(grant.reason, "reason", REASON_MAX)
    if not (ZERO < grant.amount <= MAX_AMOUNT or (grant.change_class and not grant.amount)):
        raise InvalidCharge(f"a grant's amount must be above 0 and at most {MAX_AMOUNT}")
    if not now < grant.expires_at <= now + GRANT_LONGEST:
        raise InvalidCharge("a grant must end after now and within 366 days")
    if len(ledger.grants) >= GRANTS_MAX:  # the caller took out those that ended
        raise InvalidCharge(f"the budget holds {GRANTS_MAX} grants already; let one expire")
    ledger.grants = [*ledger.grants, grant]
    _note(ledger, grant, "grant", now)


def expire(ledger: Ledger, *, now: datetime) -> list[Grant]:
    """Take out the grants that ended by `now`, each audited; returns them."""
    if not ledger.grants:
        return []
    ended = [g for g in ledger.grants if g.expires_at <= now]
    if ended:
        ledger.grants = [g for g in ledger.grants if now < g.expires_at]
    for grant in ended:
        _note(ledger, grant, "grant-expired", now)
    return ended


def excepted(ledger: Ledger, change_class: str) -> Grant | None:
    """The exception letting `change_class` through any band, if one was granted (those
    that ended were taken out as the window was rolled, before any decision)."""
    return next((g for g in ledger.grants if g.change_class == change_class), None)


def next_expiry(ledger: Ledger) -> datetime | None:
    """When `expire` next has something to do."""
    return min((g.expires_at for g in ledger.grants), default=None)


def _note(ledger: Ledger, grant: Grant, action: AuditAction, now: datetime) -> None:
    """Audit the grant given or ended, with who gave it, why and until when."""
    detail = {"by": grant.by, "reason": grant.reason, "expiresAt": format_time(grant.expires_at)}
    if grant.change_class:
        detail["changeClass"] = grant.change_class
    note(ledger, at=now, action=action, account=grant.account, amount=grant.amount, detail=detail)
