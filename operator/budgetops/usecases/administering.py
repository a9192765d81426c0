"""Administering: what a person changes by hand, outside any request.

A window's allocation adjusted, its reliability figures reported, an agent created, rotated,
revoked or resized to its allocation, a break-glass request approved (the embedded
ledger's form; in a cluster an approval is a BudgetApproval object the reconciler records).
Each is one change written through the store's `update_status` and audited like a charge;
the CLI only says what (its flags) and prints the answer. Charging, leasing and
reconciling have use cases of their own beside this one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar, get_args

from budgetops.apis.agents import Agent
from budgetops.apis.ledger import REASON_MAX, Grant
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import MAX_RISK_POINTS, ChangeClass, Reliability
from budgetops.engine import agents, breakglass, grants, ledger
from budgetops.engine.audit import note
from budgetops.engine.clock import Clock
from budgetops.engine.rollover import (
    roll_risk_window,
    summarize_risk,
    trust_account,
)
from budgetops.store import BudgetStore

T = TypeVar("T")


def adjust_allocation(
    store: BudgetStore, key: BudgetKey, *, by: int, reason: str, clock: Clock
) -> str:
    """Raise or lower a RiskBudget's allocation for the rest of its window, with a reason
    the audit trail keeps; returns the allocation and band, as people read them."""
    if not reason.strip():
        raise ValueError("--reason must say why the allocation changes")

    def adjust(budget: RiskBudget, now: datetime) -> str:
        account = budget.status.accounts[budget.spec.service_id]
        wanted = account.allocation + by
        if wanted < 0 or wanted > MAX_RISK_POINTS * 10:
            raise ValueError(f"the allocation would be {wanted} RP")
        ledger.resize(budget.status, account=budget.spec.service_id, allocation=wanted, at=now)
        budget.status.queued_audit()[-1]["detail"] = {"reason": reason.strip()[:REASON_MAX]}
        summarize_risk(budget.status, budget.spec)
        return f"{account.allocation} RP this window ({budget.status.band})"

    return _in_window(store, key, adjust, clock)


def grant(
    store: BudgetStore,
    key: BudgetKey,
    *,
    account: str | None,
    amount: Decimal,
    until: datetime,
    by: str,
    reason: str,
    clock: Clock,
    change_class: str = "",
) -> tuple[str, Decimal, Decimal]:
    """Give `account` (a RiskBudget: its service, when None) `amount` more until `until`,
    audited with who gave it and why; returns the account, its allocation and balance.
    With `change_class` (a RiskBudget, no amount), let that class through any band instead."""
    if not reason.strip():
        raise ValueError("--reason must say why the grant is given")
    if change_class and (change_class not in get_args(ChangeClass) or amount):
        raise ValueError(f"a band exception names one of {', '.join(get_args(ChangeClass))}")

    def give(budget: Budget) -> tuple[str, Decimal, Decimal]:
        now = clock()
        if isinstance(budget, RiskBudget):
            service = budget.spec.service_id
            if account not in (None, service):
                raise ValueError(f"RiskBudget {key.name} grants to its service {service} only")
            if amount != amount.to_integral_value():
                raise ValueError("a RiskBudget grant is whole risk points")
            roll_risk_window(budget.status, budget.spec, now=now)
            grants.give(budget.status, _made(service, now), now=now)
            if amount:
                held = budget.status.accounts[service].allocation
                ledger.resize(budget.status, account=service, allocation=held + amount, at=now)
                summarize_risk(budget.status, budget.spec)
            to = service
        else:
            assert isinstance(budget, TrustBudget)
            if change_class:
                raise ValueError("a band exception is for a RiskBudget")
            if account is None:
                raise ValueError(f"TrustBudget {key.name}: name the --account to grant to")
            grants.expire(budget.status, now=now)  # their accounts drop back when touched
            grants.give(budget.status, _made(account, now), now=now)
            trust_account(budget.status, budget.spec, key=account, now=now)
            to = account
        opened = budget.status.accounts[to]
        return to, opened.allocation, opened.balance

    def _made(to: str, now: datetime) -> Grant:
        return Grant(to, amount, by, reason.strip()[:REASON_MAX], now, until, change_class)

    return store.update_status(key, give)


def report_reliability(
    store: BudgetStore, key: BudgetKey, *, figures: Reliability, clock: Clock
) -> str:
    """Record this window's reliability, which decides the next window's earned capacity;
    returns the window's key."""

    def report(budget: RiskBudget, now: datetime) -> str:
        budget.status.reliability = figures
        note(
            budget.status,
            at=now,
            action="reliability",
            account=budget.spec.service_id,
            detail=figures.to_wire(),
        )
        window = budget.status.window
        return window.key if window else ""

    return _in_window(store, key, report, clock)


def add_agent(
    store: BudgetStore, budget: str, *, agent_id: str, agent: Agent, now: datetime
) -> None:
    """Open an agent's account in a USD TrustBudget and record the agent."""

    def add(found: TrustBudget) -> None:
        agents.add_agent(found.status, found.spec, agent_id=agent_id, agent=agent, now=now)

    _agents_change(store, budget, add)


def apply_allocation(
    store: BudgetStore, budget: str, *, agent_id: str, now: datetime
) -> tuple[Decimal, Decimal]:
    """Resize the agent's account to what the spec now allocates it (the spec is written
    first, by the caller), so a change shows at once rather than on its next lease; never
    below what is spent or lent. Returns the account's allocation and balance."""

    def resize(found: TrustBudget) -> tuple[Decimal, Decimal]:
        agents.find_agent(found.status, agent_id)
        trust_account(found.status, found.spec, key=agent_id, now=now)
        account = found.status.accounts[agent_id]
        return account.allocation, account.balance

    return _agents_change(store, budget, resize)


def rotate_agent(
    store: BudgetStore,
    budget: str,
    *,
    agent_id: str,
    token_id: str,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[int, Agent]:
    """Give the agent a new token; its old token and every lease under it end now. Returns
    how many leases closed, and the agent as it now stands."""

    def rotate(found: TrustBudget) -> tuple[int, Agent]:
        closed = agents.rotate(
            found.status,
            agent_id=agent_id,
            token_id=token_id,
            issued_at=now,
            expires_at=expires_at,
            now=now,
        )
        return closed, found.status.agents[agent_id]

    return _agents_change(store, budget, rotate)


def revoke_agent(store: BudgetStore, budget: str, *, agent_id: str, now: datetime) -> int:
    """Refuse the agent's token from now on; returns how many of its leases closed."""

    def revoke(found: TrustBudget) -> int:
        return agents.revoke(found.status, agent_id=agent_id, now=now)

    return _agents_change(store, budget, revoke)


def _in_window(
    store: BudgetStore, key: BudgetKey, change: Callable[[RiskBudget, datetime], T], clock: Clock
) -> T:
    """`change` on the RiskBudget's current window, rolled first if it has closed."""

    def apply(budget: Budget) -> T:
        assert isinstance(budget, RiskBudget)
        now = clock()
        roll_risk_window(budget.status, budget.spec, now=now)
        return change(budget, now)

    return store.update_status(key, apply)


def _agents_change(store: BudgetStore, budget: str, change: Callable[[TrustBudget], T]) -> T:
    """`change` on the TrustBudget (an agent's own account and its leases alone: the
    printer-column summaries follow in the reconciler's next pass, as after a charge)."""

    def apply(found: Budget) -> T:
        assert isinstance(found, TrustBudget)  # the key names one
        return change(found)

    try:
        return store.update_status(BudgetKey("TrustBudget", budget), apply)
    except agents.UnknownAgent as error:
        raise ValueError(f"no agent {error.args[0]} in TrustBudget {budget}") from None


def approve_break_glass(
    store: BudgetStore, budget: str, *, request: str, approver: str, clock: Clock
) -> breakglass.Approved:
    """Record `approver`'s approval of a break-glass request of TrustBudget `budget` (the
    embedded ledger's form: who approves is as given, not authenticated), audited when it
    counts; the answer says whether it did and why not."""

    def record(found: Budget) -> breakglass.Approved:
        assert isinstance(found, TrustBudget)  # the key names one
        now = clock()
        breakglass.drop_expired(found.status, now)
        return breakglass.approve(
            found.status,
            found.spec,
            budget=budget,
            request_id=request,
            approver=approver,
            groups=[],
            now=now,
        )

    return store.update_status(
        BudgetKey("TrustBudget", budget), record, needs_write=lambda answer: answer.recorded
    )
