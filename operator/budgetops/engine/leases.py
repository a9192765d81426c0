"""Leases: slices of an account lent to a runtime, reported spent, and returned when closed.

Every function here changes one ledger and checks what it needs before it changes anything,
so the store's compare-and-swap around it makes each one atomic. A lease keeps the
invariant of its account (`allocation = balance + spent + reserved + leased_out`): granting
moves balance to `leased_out`, a report moves `leased_out` to spent, closing returns the
rest to the balance.

Reports are counted once however often they arrive: numbered ones by a contiguous mark and
the few counted above it, unnumbered ones by their request id (every one, for the life of the
lease). A replay with another cost than the one counted is a conflict, refused.

After a lease closed (released, expired, revoked), a report is still counted for as long as
the lease is remembered (its ttl), but only for calls stamped at or before the close, and
only up to what the lease returned: money spent while the lease was open reaches the ledger,
nothing spent after the close does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from budgetops.apis.ledger import (
    COSTS_KEPT,
    KEY_MAX,
    REPORTS_AHEAD_MAX,
    UNNUMBERED_MAX,
    Account,
    LeaseHold,
    LeaseState,
    Ledger,
)
from budgetops.engine.ledger import ZERO, InvalidCharge, check_charge, check_name, record

LEASES_KEPT = 1000
"""Open leases one account holds at most; closed ones never limit new ones. They live in the
budget's status, which the API server keeps under 1.5 MiB."""

CLOSED_KEPT = 1000
"""Closed leases one account remembers at most (for late reports): past this, the one that
closed first is forgotten early."""


class UnknownLease(LookupError):
    """No lease of that id in the account (never granted, or closed and forgotten)."""


class OutOfOrder(ValueError):
    """A numbered report too far past what was counted; nothing was counted."""


class TooManyLeases(ValueError):
    """The account holds LEASES_KEPT open leases already; nothing was granted."""


class Conflict(ValueError):
    """A report counted before came again with another cost; nothing was counted."""


class TooManyUnnumbered(ValueError):
    """The lease counted UNNUMBERED_MAX unnumbered reports already; nothing was counted."""


class LeaseClosed(ValueError):
    """A report on a closed lease of a call stamped after the close; nothing was counted."""


@dataclass(frozen=True)
class Usage:
    """One reported call: its id, its number in the lease (None if the runtime sends none),
    what it cost and when it was made (Unix seconds, as the runtime stamped it)."""

    request_id: str
    seq: int | None
    cost: Decimal
    stamped: int | None = None

    @property
    def key(self) -> str:
        """What the lease remembers its cost by."""
        return self.request_id if self.seq is None else f"#{self.seq}"


@dataclass(frozen=True)
class Counted:
    """What a report did: how many records were new, how many replays, how much was moved
    to spent (`late` of it after the lease closed), and how much of the reported cost the
    lease could no longer cover."""

    accepted: int
    duplicates: int
    spent: Decimal
    uncovered: Decimal
    hold: LeaseHold
    late: Decimal = ZERO


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
    token: str = "",
) -> Decimal:
    """Lend what is asked, or the balance when less is left; returns what was lent (zero
    when nothing is left, and then nothing changed). Granting an id twice grants once."""
    check_charge(account=account, key=lease_id, amount=requested)
    for text, what in ((holder, "holder"), (agent, "agent"), (token, "token id")):
        check_name(text, what, KEY_MAX)
    target = ledger.accounts[account]
    known = target.leases.get(lease_id)
    if known is not None:
        return known.granted
    if sum(hold.state == "active" for hold in target.leases.values()) >= LEASES_KEPT:
        raise TooManyLeases(f"{account} holds {LEASES_KEPT} open leases; release some first")
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
        token=token,
    )
    record(ledger, at=now, account=account, action="lease", amount=amount, key=lease_id)
    return amount


@dataclass
class _Marks:
    """A hold's idempotency state as a report changes it, applied only once all is checked."""

    through: int
    above: set[int]
    costs: dict[str, Decimal]

    def apply(self, hold: LeaseHold) -> None:
        for seq in range(hold.reported_through - COSTS_KEPT + 1, self.through - COSTS_KEPT + 1):
            self.costs.pop(f"#{seq}", None)
        hold.reported_through, hold.counted_above = self.through, sorted(self.above)
        hold.costs = self.costs


def _mark(hold: LeaseHold, usages: Sequence[Usage]) -> tuple[list[bool], _Marks]:
    """For each usage, whether it is new, and the marks with the new ones counted. Raises
    OutOfOrder, TooManyUnnumbered or Conflict; the hold itself is not changed."""
    marks = _Marks(hold.reported_through, set(hold.counted_above), dict(hold.costs))
    seen = set(hold.unnumbered())
    fresh = []
    for usage in usages:
        if usage.seq is None:
            new = usage.request_id not in seen
            if new and len(seen) >= UNNUMBERED_MAX:
                raise TooManyUnnumbered(
                    f"this lease counted {UNNUMBERED_MAX} reports without `seq` already; number "
                    "the reports (seq 1, 2, 3, ...) or refresh to a new lease"
                )
            seen.add(usage.request_id)
        elif usage.seq <= marks.through or usage.seq in marks.above:
            new = False
        elif usage.seq > marks.through + REPORTS_AHEAD_MAX:
            raise OutOfOrder(
                f"report {usage.seq} is more than {REPORTS_AHEAD_MAX} past report "
                f"{marks.through}, the last one counted in order; send the earlier ones first"
            )
        else:
            new = True
            marks.above.add(usage.seq)
            while marks.through + 1 in marks.above:
                marks.through += 1
                marks.above.remove(marks.through)
        known = marks.costs.get(usage.key)
        if not new and known is not None and known != usage.cost:
            raise Conflict(
                f"report {usage.key.removeprefix('#')} was counted with a cost of {known} USD, "
                f"not {usage.cost}: a record is reported again only as it was first sent"
            )
        if new:
            marks.costs[usage.key] = usage.cost
        fresh.append(new)
    return fresh, marks


def report(
    ledger: Ledger, *, account: str, lease_id: str, usages: Sequence[Usage], now: datetime
) -> Counted:
    """Count each usage once: its cost moves from the lease to spent, up to what the lease
    still lends; after the lease closed, up to what it returned, and only for calls stamped
    at or before the close. Raises UnknownLease, OutOfOrder, TooManyUnnumbered, Conflict,
    LeaseClosed or InvalidCharge, and then nothing changed."""
    hold = find_lease(ledger, account=account, lease_id=lease_id)
    for usage in usages:
        check_charge(account=account, key=usage.request_id or "-", amount=usage.cost)
        if usage.seq is not None and usage.seq < 1:
            raise InvalidCharge(f"report numbers start at 1, not {usage.seq}")
    target = ledger.accounts[account]
    fresh, marks = _mark(hold, usages)
    if hold.closed_at is not None:
        new_ones = [usage for usage, new in zip(usages, fresh, strict=True) if new]
        _check_before_close(hold, hold.closed_at, new_ones)
    marks.apply(hold)
    accepted = 0
    spent = uncovered = ZERO
    for usage, new in zip(usages, fresh, strict=True):
        if not new:
            continue
        accepted += 1
        cover = _cover(target, hold, usage.cost)
        spent += cover
        uncovered += usage.cost - cover
    late = ZERO if hold.state == "active" else spent
    hold.late_spent += late
    if spent:
        key = lease_id if not late else f"{lease_id}:late"
        record(ledger, at=now, account=account, action="lease-spend", amount=spent, key=key)
    return Counted(accepted, len(usages) - accepted, spent, uncovered, hold, late)


def _check_before_close(hold: LeaseHold, closed_at: datetime, usages: Sequence[Usage]) -> None:
    """Raise LeaseClosed unless every usage was stamped at or before the close."""
    close_second = closed_at.timestamp()
    for usage in usages:
        if usage.stamped is None or usage.stamped > close_second:
            when = "not stamped" if usage.stamped is None else f"stamped {usage.stamped}"
            raise LeaseClosed(
                f"the lease was {hold.state} at {int(close_second)} (Unix seconds) and report "
                f"{usage.key.removeprefix('#')} is {when}: only calls made before the close are "
                "counted on it; charge later calls to a current lease"
            )


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
    returned = _close(ledger, account=account, lease_id=lease_id, now=now, state=state)
    _forget_oldest_closed(ledger.accounts[account])
    return returned


def _close(
    ledger: Ledger, *, account: str, lease_id: str, now: datetime, state: LeaseState
) -> Decimal:
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


def _forget_oldest_closed(target: Account) -> None:
    """Keep at most CLOSED_KEPT closed leases: forget the ones that closed first."""
    closed = [(h.closed_at, i) for i, h in target.leases.items() if h.closed_at is not None]
    for _, forgotten in sorted(closed)[: max(0, len(closed) - CLOSED_KEPT)]:
        del target.leases[forgotten]


def close_agent(ledger: Ledger, *, account: str, now: datetime, state: LeaseState) -> int:
    """Close every open lease of an account at once (its agent's token was rotated or
    revoked); returns how many were closed."""
    target = ledger.accounts.get(account)
    if target is None:
        return 0
    open_ids = [lease_id for lease_id, h in target.leases.items() if h.state == "active"]
    for lease_id in open_ids:
        _close(ledger, account=account, lease_id=lease_id, now=now, state=state)
    _forget_oldest_closed(target)
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
                returned = _close(ledger, account=name, lease_id=lease_id, now=now, state="expired")
                expired.append((name, lease_id, returned))
            forget = _forget_at(hold)
            if forget is not None and forget <= now:
                del target.leases[lease_id]
        _forget_oldest_closed(target)
    return expired


def next_due(ledger: Ledger) -> datetime | None:
    """When `expire` next has something to do."""
    due = [
        hold.expires_at if hold.state == "active" else _forget_at(hold)
        for target in ledger.accounts.values()
        for hold in target.leases.values()
    ]
    return min((d for d in due if d is not None), default=None)
