"""The ledger as it is persisted in a budget's status (and in the embedded store).

One shape serves every kind so that one engine can charge them all:
`allocation = balance + spent + reserved + leasedOut` for each account.
`reserved` and `leasedOut` are kept beside their itemised maps because they are what
`kubectl get` and alerts read; the engine keeps both in step and `audit` checks it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import ConfigDict, Field

from budgetops.apis.common import Amount, Model, Timestamp

SETTLED_KEYS_KEPT = 256
"""Idempotency keys remembered after settling; uids are re-sent within seconds, not days."""

ENTRIES_KEPT = 50
"""Recent ledger entries kept in status for people; the full audit goes to Events and logs."""

EntryAction = Literal[
    "reserve", "confirm", "refund", "lease", "lease-spend", "lease-return", "reset", "break-glass"
]


class Reservation(Model):
    """Points held for an admitted object until it is seen (confirm) or expires (refund)."""

    amount: Amount
    created_at: Timestamp
    expires_at: Timestamp
    object: str = Field(default="", max_length=512)


class LeaseHold(Model):
    """The part of an account lent to a BudgetLease and not yet reported as spent."""

    amount: Amount
    expires_at: Timestamp
    holder: str = Field(default="", max_length=253)


class Account(Model):
    """One account's window: what it was given and where every point of it is now."""

    allocation: Amount
    balance: Amount
    spent: Amount = Decimal(0)
    reserved: Amount = Decimal(0)
    leased_out: Amount = Decimal(0)
    window_start: Timestamp
    resets_at: Timestamp | None = None
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    leases: dict[str, LeaseHold] = Field(default_factory=dict)


class Entry(Model):
    """One movement in the ledger, newest last."""

    at: Timestamp
    account: str = Field(max_length=253)
    action: EntryAction
    amount: Amount
    key: str = Field(default="", max_length=253)
    object: str = Field(default="", max_length=512)


class Ledger(Model):
    """Accounts plus what makes charges idempotent and legible."""

    model_config = ConfigDict(extra="ignore")

    accounts: dict[str, Account] = Field(default_factory=dict)
    settled: list[str] = Field(default_factory=list, max_length=SETTLED_KEYS_KEPT)
    entries: list[Entry] = Field(default_factory=list, max_length=ENTRIES_KEPT)
