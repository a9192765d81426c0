"""Ledger operations: every movement of points between balance, reservations, leases and spent.

Each function checks everything it needs *before* it changes anything, so a refused operation
leaves the ledger exactly as it was; the store wraps a call in one transaction (or one
compare-and-swap), which makes it atomic. The invariant, per account, is

    allocation = balance + spent + reserved + leased_out

and `audit` reports any account that breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from budgetops.apis.common import AMOUNT_PLACES, MAX_AMOUNT
from budgetops.apis.ledger import (
    ENTRIES_KEPT,
    KEY_MAX,
    REF_MAX,
    Account,
    Entry,
    Ledger,
    MovementAction,
    ReleaseMark,
    Reservation,
    Witness,
)
from budgetops.apis.names import name_problem
from budgetops.engine.audit import note

ZERO = Decimal(0)


ChargeStatus = Literal["reserved", "duplicate", "insufficient"]


@dataclass(frozen=True)
class Charge:
    """What a reserve or lease did: `duplicate` means the key was charged before."""

    status: ChargeStatus
    amount: Decimal
    balance: Decimal

    @property
    def charged(self) -> bool:
        return self.status == "reserved"


class UnknownAccount(KeyError):
    """An operation named an account the ledger has never opened."""


class InvalidCharge(ValueError):
    """An input the ledger could not store and read back; nothing was changed.

    The status models bound every string and amount they read; an operation checks the
    same bounds before it writes, so no input can make a stored ledger unreadable.
    """


def check_name(value: str, what: str, limit: int) -> None:
    """Raise InvalidCharge unless `value` may be stored as a name or key (apis.names)."""
    problem = name_problem(value, limit)
    if problem is not None:
        raise InvalidCharge(f"the {what} {problem}")


def _check_text(value: str, what: str, limit: int) -> None:
    if not value:
        raise InvalidCharge(f"the {what} must not be empty")
    check_name(value, what, limit)


def check_charge(
    *,
    account: str,
    key: str,
    amount: Decimal,
    ref: str = "",
    witness: Witness | None = None,
) -> None:
    """Raise InvalidCharge unless a reservation of these could be stored and read back."""
    _check_text(account, "account", KEY_MAX)
    _check_text(key, "idempotency key", KEY_MAX)
    check_name(ref, "object's description", REF_MAX)
    if witness is not None:
        _check_text(witness.path, "object's API path", REF_MAX)
        _check_text(witness.uid, "object's uid", KEY_MAX)
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        raise InvalidCharge(f"the amount {amount} is not between 0 and {MAX_AMOUNT}")
    if not -AMOUNT_PLACES <= amount.as_tuple().exponent <= 0:  # type: ignore[operator]
        raise InvalidCharge(
            f"the amount {amount} is not written with 0 to {AMOUNT_PLACES} decimals (as stored)"
        )


def open_account(
    ledger: Ledger,
    *,
    key: str,
    allocation: Decimal,
    window_start: datetime,
    resets_at: datetime | None,
) -> Account:
    """The account under `key`, opened with a full balance if it did not exist yet."""
    account = ledger.accounts.get(key)
    if account is None:
        account = Account(
            allocation=allocation,
            balance=allocation,
            window_start=window_start,
            resets_at=resets_at,
        )
        ledger.accounts[key] = account
    return account


def _account(ledger: Ledger, key: str) -> Account:
    try:
        return ledger.accounts[key]
    except KeyError:
        raise UnknownAccount(key) from None


def record(
    ledger: Ledger,
    *,
    at: datetime,
    account: str,
    action: MovementAction,
    amount: Decimal,
    key: str = "",
    ref: str = "",
) -> None:
    """Keep a movement among the recent entries, and queue its audit record."""
    ledger.entries.append(
        Entry(at=at, account=account, action=action, amount=amount, key=key, object=ref)
    )
    del ledger.entries[:-ENTRIES_KEPT]
    note(ledger, at=at, action=action, account=account, amount=amount, key=key, ref=ref)


def is_known(ledger: Ledger, key: str) -> bool:
    """Whether `key` is reserved now, was settled recently, or is a release id charged in
    this window: charging it again is a replay (or, for a release id, a conflict)."""
    return key in ledger.settled or key in ledger.releases or ledger.reservation_of(key) is not None


def reserve(
    ledger: Ledger,
    *,
    account: str,
    key: str,
    amount: Decimal,
    now: datetime,
    ttl: timedelta,
    ref: str = "",
    witness: Witness | None = None,
    dry_run: bool = False,
    release_of: str | None = None,
) -> Charge:
    """Hold `amount` for the object `key` until it is confirmed or expires; never twice.

    An object's key is remembered for KEY_KEPT once settled; a declared release id
    (`release_of`: what it is charged for) for the rest of the window. Memory never refuses
    a charge. The account never moves back in time: a charge stamped before its window
    (a clock that went back) counts in the current one. With `dry_run` nothing changes, and
    the Charge says what a real reserve would have done. Raises InvalidCharge for an input
    that could not be stored.
    """
    check_charge(account=account, key=key, amount=amount, ref=ref, witness=witness)
    if release_of is not None:
        check_name(release_of, "release's object", REF_MAX)
    target = _account(ledger, account)
    if not dry_run:  # a dry run changes nothing, not even what is remembered
        ledger.forget_settled(now)
    if is_known(ledger, key):
        return Charge("duplicate", ZERO, target.balance)
    if amount > target.balance:
        return Charge("insufficient", ZERO, target.balance)
    if dry_run:
        return Charge("reserved", amount, target.balance - amount)
    if release_of is not None and not amount:
        # A free release holds nothing and costs nothing to repeat: remembering it for the
        # window would let release ids grow the status without bound, so charged marks stay
        # within the allocation.
        return Charge("reserved", ZERO, target.balance)
    at = max(now, target.window_start)
    target.balance -= amount
    target.reserved += amount
    ledger.reserved(
        account,
        key,
        Reservation(amount=amount, created_at=at, expires_at=at + ttl, object=ref, witness=witness),
    )
    if release_of is not None:
        ledger.releases[key] = ReleaseMark(of=release_of, at=at)
    record(ledger, at=now, account=account, action="reserve", amount=amount, key=key, ref=ref)
    return Charge("reserved", amount, target.balance)


def _settle_reservation(
    ledger: Ledger,
    *,
    key: str,
    now: datetime,
    action: Literal["confirm", "refund", "cancel"],
    remember: bool = True,
) -> Decimal | None:
    """Close the reservation under `key` into spent (confirm) or back to balance (refund,
    cancel); a cancelled key, and one that need not be (`remember` False), is not
    remembered as settled, and only a confirmed release id stays remembered.

    Returns the amount, or None when nothing is reserved under `key` (a held amount can be
    zero: an emergency release admitted on an empty budget).
    """
    name = ledger.reservation_of(key)
    if name is None:
        return None
    account = ledger.accounts[name]
    held = ledger.unreserved(name, key)
    account.reserved -= held.amount
    if action == "confirm" and held.created_at >= account.window_start:
        account.spent += held.amount
    else:
        # Refunded, or spent in a window that has since closed (and was counted there):
        # either way the current window gets it back.
        account.balance += held.amount
    if key in ledger.releases:
        # A release id is remembered by its mark, while what it paid for stands: a release
        # refunded or taken back never shipped, so asking again is a new charge.
        if action != "confirm":
            del ledger.releases[key]
    elif action != "cancel" and remember:
        ledger.remember_settled(key, now)
    entry: MovementAction = "confirm" if action == "confirm" else "refund"
    record(ledger, at=now, account=name, action=entry, amount=held.amount, key=key, ref=held.object)
    return held.amount


def confirm(ledger: Ledger, *, key: str, now: datetime, remember: bool = True) -> bool:
    """The object exists: its reservation becomes spent. False if nothing was reserved.
    `remember` False: no request can carry `key` again (see `Witness.created`)."""
    settled = _settle_reservation(ledger, key=key, now=now, action="confirm", remember=remember)
    return settled is not None


def refund(ledger: Ledger, *, key: str, now: datetime) -> Decimal:
    """The object never appeared: its reservation returns to the balance. Returns the amount."""
    refunded = _settle_reservation(ledger, key=key, now=now, action="refund")
    return ZERO if refunded is None else refunded


def cancel(ledger: Ledger, *, key: str, now: datetime) -> Decimal | None:
    """Take back a reservation whose request was not admitted after all (another budget
    refused it): the amount returns to the balance and, unlike a refund, the key is not
    remembered, so the same request asked again is charged like a new one. Returns the
    amount, or None when nothing is reserved under `key`."""
    return _settle_reservation(ledger, key=key, now=now, action="cancel")


def expired_reservations(ledger: Ledger, *, now: datetime) -> list[str]:
    """Keys of reservations whose confirmation window has passed, oldest first."""
    found = [
        (held.expires_at, key)
        for account in ledger.accounts.values()
        for key, held in account.reservations.items()
        if held.expires_at <= now
    ]
    return [key for _, key in sorted(found)]


def reset(
    ledger: Ledger,
    *,
    account: str,
    allocation: Decimal,
    window_start: datetime,
    resets_at: datetime | None,
    carry_over: bool = False,
) -> None:
    """Start a new window for one account.

    Spending starts again from zero. Reservations and leases still open belong to objects and
    holders that are still in flight, so they stay held in the new window until they settle;
    a reservation from the old window then returns to the balance whether it is confirmed
    (the old window counted it) or refunded. With carry-over, the unused balance of the old
    window is added to the new allocation. Release ids charged before the new window are
    let go unless still reserved; object keys go by age (KEY_KEPT), not by window.
    """
    target = _account(ledger, account)
    held = target.reserved + target.leased_out
    carried = target.balance if carry_over else ZERO
    # Carried over window after window, an unused balance would grow past what a status
    # may hold (and be read back): it stops at MAX_AMOUNT.
    new_allocation = max(min(allocation + carried, MAX_AMOUNT), held)
    target.allocation = new_allocation
    target.spent = ZERO
    target.balance = new_allocation - held
    target.window_start = window_start
    target.resets_at = resets_at
    ledger.forget_releases_before(window_start)
    record(ledger, at=window_start, account=account, action="reset", amount=new_allocation)


def resize(ledger: Ledger, *, account: str, allocation: Decimal, at: datetime) -> None:
    """Apply a changed allocation mid-window; it never drops below what is already committed."""
    target = _account(ledger, account)
    committed = target.spent + target.reserved + target.leased_out
    target.allocation = max(allocation, committed)
    target.balance = target.allocation - committed
    note(ledger, at=at, action="adjust", account=account, amount=target.allocation)


def audit(ledger: Ledger) -> list[str]:
    """Every account that breaks the invariant or has a negative part, as readable lines."""
    problems = []
    for name, a in ledger.accounts.items():
        reserved = sum((r.amount for r in a.reservations.values()), ZERO)
        leased = sum((h.amount for h in a.leases.values()), ZERO)
        if a.allocation != a.balance + a.spent + a.reserved + a.leased_out:
            problems.append(
                f"{name}: allocation {a.allocation} != balance {a.balance} + spent {a.spent}"
                f" + reserved {a.reserved} + leased out {a.leased_out}"
            )
        if reserved != a.reserved or leased != a.leased_out:
            problems.append(f"{name}: itemised holds ({reserved}, {leased}) differ from totals")
        if min(a.balance, a.spent, a.reserved, a.leased_out) < 0:
            problems.append(f"{name}: a part of the ledger is negative")
    return problems
