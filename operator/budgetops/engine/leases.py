"""Leases: slices of an account lent to a runtime, reported spent, and returned when closed.

Every function here changes one ledger and checks what it needs before it changes anything,
so the store's compare-and-swap around it makes each one atomic. A lease keeps the
invariant of its account (`allocation = balance + spent + reserved + leased_out`): granting
moves balance to `leased_out`, a report moves `leased_out` to spent, closing returns the
rest to the balance.

Reports are counted once however often they arrive: numbered ones by a contiguous mark and
the few counted above it, unnumbered ones by their request id among the latest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from budgetops.apis.ledger import (
    KEY_MAX,
    RECENT_REQUESTS_KEPT,
    REPORTS_AHEAD_MAX,
    Account,
    LeaseHold,
    LeaseState,
    Ledger,
)
from budgetops.engine.ledger import ZERO, InvalidCharge, check_charge, record

LEASES_KEPT = 1000
"""Leases (open, or closed and still remembered) one account holds at most: they live in
the budget's status, which the API server keeps under 1.5 MiB."""


class UnknownLease(LookupError):
    """No lease of that id in the account (never granted, or closed and forgotten)."""


class OutOfOrder(ValueError):
    """A numbered report too far past what was counted; nothing was counted."""


class TooManyLeases(ValueError):
    """The account holds LEASES_KEPT leases already; nothing was granted."""


@dataclass(frozen=True)
class Usage:
    """One reported call: its id, its number in the lease (None if the runtime sends none)
    and what it cost."""

    request_id: str
    seq: int | None
    cost: Decimal


@dataclass(frozen=True)
class Counted:
    """What a report did: how many records were new, how many replays, how much was moved
    to spent, and how much of the reported cost the lease could no longer cover."""

    accepted: int
    duplicates: int
    spent: Decimal
    uncovered: Decimal
    hold: LeaseHold


def find_lease(ledger: Ledger, *, account: str, lease_id: str) -> LeaseHold:
    target = ledger.accounts.get(account)
    hold = None if target is None else target.leases.get(lease_id)
    if hold is None:
        raise UnknownLease(lease_id)
    return hold


def grant(
    ledger: Ledger,
    *,
    account: str,
    lease_id: str,
    requested: Decimal,
    now: datetime,
    ttl: timedelta,
    holder: str = "",
    agent: str = "",
) -> Decimal:
    """Lend what is asked, or the balance when less is left; returns what was lent (zero
    when nothing is left, and then nothing changed). Granting an id twice grants once."""
    check_charge(account=account, key=lease_id, amount=requested)
    for text, what in ((holder, "holder"), (agent, "agent")):
        if len(text) > KEY_MAX:
            raise InvalidCharge(f"the {what} is longer than {KEY_MAX} characters")
    target = ledger.accounts[account]
    known = target.leases.get(lease_id)
    if known is not None:
        return known.granted
    if len(target.leases) >= LEASES_KEPT:
        raise TooManyLeases(f"{account} holds {LEASES_KEPT} leases; release some first")
    amount = min(requested, target.balance)
    if amount <= 0:
        return ZERO
    target.balance -= amount
    target.leased_out += amount
    target.leases[lease_id] = LeaseHold(
        amount=amount,
        expires_at=now + ttl,
        holder=holder,
        agent=agent,
        granted=amount,
        created_at=now,
    )
    record(ledger, at=now, account=account, action="lease", amount=amount, key=lease_id)
    return amount


def _mark(hold: LeaseHold, usages: Sequence[Usage]) -> list[bool]:
    """For each usage, whether it is new, marking it counted; raises OutOfOrder for a
    number too far past the mark, before the hold is changed."""
    through, above = hold.reported_through, set(hold.counted_above)
    recent = list(hold.recent_requests)
    fresh = []
    for usage in usages:
        if usage.seq is None:
            new = usage.request_id not in recent
            if new:
                recent = [*recent, usage.request_id][-RECENT_REQUESTS_KEPT:]
        elif usage.seq <= through or usage.seq in above:
            new = False
        elif usage.seq > through + REPORTS_AHEAD_MAX:
            raise OutOfOrder(
                f"report {usage.seq} is more than {REPORTS_AHEAD_MAX} past report {through}, "
                "the last one counted in order; send the earlier ones first"
            )
        else:
            new = True
            above.add(usage.seq)
            while through + 1 in above:
                through += 1
                above.remove(through)
        fresh.append(new)
    hold.reported_through, hold.counted_above = through, sorted(above)
    hold.recent_requests = recent
    return fresh


def report(
    ledger: Ledger, *, account: str, lease_id: str, usages: Sequence[Usage], now: datetime
) -> Counted:
    """Count each usage once: its cost moves from the lease to spent, up to what the lease
    still lends; after the lease closed, up to what it returned (late reports of calls
    made while it was open). Raises UnknownLease, OutOfOrder or InvalidCharge, and then
    nothing changed."""
    hold = find_lease(ledger, account=account, lease_id=lease_id)
    for usage in usages:
        check_charge(account=account, key=usage.request_id or "-", amount=usage.cost)
        if usage.seq is not None and usage.seq < 1:
            raise InvalidCharge(f"report numbers start at 1, not {usage.seq}")
    target = ledger.accounts[account]
    fresh = _mark(hold, usages)
    accepted = 0
    spent = uncovered = ZERO
    for usage, new in zip(usages, fresh, strict=True):
        if not new:
            continue
        accepted += 1
        cover = _cover(target, hold, usage.cost)
        spent += cover
        uncovered += usage.cost - cover
    if spent:
        record(ledger, at=now, account=account, action="lease-spend", amount=spent, key=lease_id)
    return Counted(accepted, len(usages) - accepted, spent, uncovered, hold)


def _cover(target: Account, hold: LeaseHold, cost: Decimal) -> Decimal:
    """Move what the lease can cover of `cost` to spent; returns that part."""
    if hold.state == "active":
        cover = min(cost, hold.amount)
        hold.amount -= cover
        target.leased_out -= cover
    else:
        cover = min(cost, hold.returned, target.balance)
        hold.returned -= cover
        target.balance -= cover
    hold.spent += cover
    target.spent += cover
    return cover


def close(
    ledger: Ledger, *, account: str, lease_id: str, now: datetime, state: LeaseState
) -> Decimal:
    """Release, expire or revoke a lease: what it still lends returns to the balance.
    Closing a closed lease does nothing; returns what was returned now."""
    hold = find_lease(ledger, account=account, lease_id=lease_id)
    if hold.state != "active":
        return ZERO
    target = ledger.accounts[account]
    returned = hold.amount
    target.leased_out -= returned
    target.balance += returned
    hold.amount = ZERO
    hold.returned = returned
    hold.state = state
    hold.closed_at = now
    record(ledger, at=now, account=account, action="lease-return", amount=returned, key=lease_id)
    return returned


def close_agent(ledger: Ledger, *, account: str, now: datetime, state: LeaseState) -> int:
    """Close every open lease of an account at once (its agent's token was rotated or
    revoked); returns how many were closed."""
    target = ledger.accounts.get(account)
    if target is None:
        return 0
    open_ids = [lease_id for lease_id, h in target.leases.items() if h.state == "active"]
    for lease_id in open_ids:
        close(ledger, account=account, lease_id=lease_id, now=now, state=state)
    return len(open_ids)


def _forget_at(hold: LeaseHold) -> datetime | None:
    """A closed lease is remembered for its ttl after it closed, for late reports."""
    if hold.closed_at is None:
        return None
    ttl = hold.expires_at - hold.created_at if hold.created_at else timedelta(0)
    return hold.closed_at + ttl


def expire(ledger: Ledger, *, now: datetime) -> list[tuple[str, str, Decimal]]:
    """Close what expired and forget what was closed long enough; returns the expired
    leases as (account, lease id, returned)."""
    expired = []
    for name, target in ledger.accounts.items():
        for lease_id, hold in list(target.leases.items()):
            if hold.state == "active" and hold.expires_at <= now:
                returned = close(ledger, account=name, lease_id=lease_id, now=now, state="expired")
                expired.append((name, lease_id, returned))
            forget = _forget_at(hold)
            if forget is not None and forget <= now:
                del target.leases[lease_id]
    return expired


def next_due(ledger: Ledger) -> datetime | None:
    """When `expire` next has something to do."""
    due = [
        hold.expires_at if hold.state == "active" else _forget_at(hold)
        for target in ledger.accounts.values()
        for hold in target.leases.values()
    ]
    return min((d for d in due if d is not None), default=None)
