"""Rolling budgets into their current window: TrustBudget account resets, RiskBudget windows.

Both admission and the reconciler call these before they look at a balance, and both are
idempotent: the persisted window decides whether anything is due, so two callers (or one
caller twice) roll a window exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from budgetops.apis.riskbudget import (
    Reliability,
    RiskBudgetSpec,
    RiskBudgetStatus,
    UnknownsTally,
    WindowRef,
    WindowSummary,
)
from budgetops.apis.trustbudget import TrustBudgetSpec, TrustBudgetStatus
from budgetops.engine import grants, ledger, spending
from budgetops.engine.bands import band_for, percent_used, worse
from budgetops.engine.earned import earned_increase
from budgetops.engine.windows import Window, interval_bounds, window_at, windows_between

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Reset intervals are counted from here, so `24h` resets at 00:00Z and `1h` on the hour."""

HISTORY_KEPT = 24


def trust_account(
    status: TrustBudgetStatus, spec: TrustBudgetSpec, *, key: str, now: datetime
) -> None:
    """Open `key` if new, reset it if its interval has passed, follow a changed spec.

    A budget without a reset interval has one window from the account's first charge on.
    When the interval is added or removed, the account adopts it from now on without a
    refill; a changed allocation (initialBalance, or the agent's own) applies at once, never
    below what is committed. Grants that last add to the allocation (`grants`).
    """
    account = status.accounts.get(key)
    interval = spec.reset_interval
    allocation = spec.allocation_for(key) + grants.granted(status, key, now)
    if (
        account is not None
        and account.allocation == allocation
        and (account.resets_at is None) == (interval is None)
        and (account.resets_at is None or now < account.resets_at)
    ):
        return  # nothing due: the path of almost every charge
    start: datetime = now
    end: datetime | None = None
    if interval is not None:
        start, end = interval_bounds(anchor=EPOCH, interval=interval, at=now)
    if account is None:
        ledger.open_account(
            status, key=key, allocation=allocation, window_start=start, resets_at=end
        )
        return
    if account.resets_at is not None and account.resets_at <= now:
        ledger.reset(
            status,
            account=key,
            allocation=allocation,
            window_start=start,
            resets_at=end,
        )
        return
    if (account.resets_at is None) != (interval is None):
        account.window_start, account.resets_at = start, end
    committed = account.allocation - account.balance
    if account.allocation != max(allocation, committed):  # else held at what is committed
        ledger.resize(status, account=key, allocation=allocation, at=now)


def summarize_trust(status: TrustBudgetStatus) -> None:
    """Refresh the printer-column fields from the accounts."""
    balances = [a.balance for a in status.accounts.values()]
    status.lowest_balance = min(balances) if balances else None
    status.exhausted_accounts = sum(1 for b in balances if b <= 0)


def _window_ref(window: Window) -> WindowRef:
    return WindowRef(key=window.key, start=window.start, end=window.end)


def _as_window(ref: WindowRef) -> Window:
    return Window(ref.key, ref.start, ref.end)


def _close(status: RiskBudgetStatus, service: str) -> WindowSummary:
    assert status.window is not None
    assert status.allocation is not None
    account = status.accounts[service]
    return WindowSummary(
        window=status.window,
        allocated=status.allocation,
        consumed=int(account.spent + account.reserved + account.leased_out),
        entries=sum(1 for e in status.entries if e.action == "reserve"),
        band_reached=status.band_reached,
        reliability=status.reliability,
        unknowns=status.unknowns,
    )


def _base_allocation(spec: RiskBudgetSpec) -> int:
    """The allocation a new window opens with, before anything changes: a tier the tier
    table lacks refuses the one request (or reconcile) that would open it, never the budget,
    which keeps its current window until the table or the spec names a tier it has."""
    try:
        return spec.base_allocation()
    except ValueError as error:
        raise ledger.InvalidCharge(
            f"RiskBudget {spec.service_id} cannot open a window: {error}"
        ) from None


def roll_risk_window(status: RiskBudgetStatus, spec: RiskBudgetSpec, *, now: datetime) -> int:
    """Bring a RiskBudget into the window holding `now`; returns how many windows closed.

    A missed boundary (the operator was down for two windows) closes the last open window
    with its figures and records each skipped window as empty, once.
    """
    service = spec.service_id
    for ended in grants.expire(status, now=now):  # first: the window it was given in had it
        if service in status.accounts and ended.amount:
            held = status.accounts[service].allocation
            ledger.resize(status, account=service, allocation=held - ended.amount, at=now)
            summarize_risk(status, spec)
    current = window_at(spec.window, now)
    if status.window is None or service not in status.accounts:
        base = _base_allocation(spec)
        ledger.open_account(
            status,
            key=service,
            allocation=Decimal(base) + grants.granted(status, service, now),
            window_start=current.start,
            resets_at=current.end,
        )
        status.window = _window_ref(current)
        status.allocation = base
        summarize_risk(status, spec)
        return 0
    missed = windows_between(spec.window, last=_as_window(status.window), now=now)
    base = _base_allocation(spec) if missed else 0
    for window in missed:
        closed = _close(status, service)
        earned = earned_increase(
            spec.earned_capacity,
            base_allocation=base,
            windows=[h.reliability for h in [*status.history, closed]],
        )
        closed.earned_increase, closed.earned_reason = earned.increase, earned.reason
        history = [*status.history, closed][-HISTORY_KEPT:]
        allocation = base + earned.increase
        ledger.reset(
            status,
            account=service,
            allocation=allocation + grants.granted(status, service, now),
            window_start=window.start,
            resets_at=window.end,
            carry_over=spec.carry_over,
        )
        status.history = history
        status.window = _window_ref(window)
        status.allocation = int(status.accounts[service].allocation)
        status.earned_increase = earned.increase
        status.reliability = Reliability()
        status.unknowns = UnknownsTally()
        status.entries = [e for e in status.entries if e.at >= window.start]
        status.band_reached = "Green"
        summarize_risk(status, spec)
    return len(missed)


def summarize_risk(status: RiskBudgetStatus, spec: RiskBudgetSpec) -> None:
    """Refresh consumed, percent and band from the service's account."""
    account = status.accounts[spec.service_id]
    consumed = account.spent + account.reserved + account.leased_out
    status.allocation = int(account.allocation)
    status.consumed = int(consumed)
    status.percent_used = str(percent_used(consumed, account.allocation))
    status.band = band_for(consumed, account.allocation, spec.thresholds)
    status.band_reached = worse(status.band_reached, status.band)


def bring_current_trust(status: TrustBudgetStatus, spec: TrustBudgetSpec, *, now: datetime) -> None:
    """Reset every account whose interval has passed, as admission would on its next charge,
    and measure spending against the spec's informative allocations; ended grants are taken
    out, and their accounts drop back."""
    grants.expire(status, now=now)
    for key in list(status.accounts):
        trust_account(status, spec, key=key, now=now)
    summarize_trust(status)
    spending.measure(status.spent_by, spec.informative_allocations)
