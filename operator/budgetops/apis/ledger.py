"""The ledger as it is persisted in a budget's status (and in the embedded store).

One shape serves every kind so that one engine can charge them all:
`allocation = balance + spent + reserved + leasedOut` for each account.
`reserved` and `leasedOut` are kept beside their itemised maps because they are what
`kubectl get` and alerts read; the engine keeps both in step and `audit` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from budgetops.apis.common import Amount, Model, Timestamp

SETTLED_KEYS_KEPT = 256
"""Idempotency keys remembered after settling; uids are re-sent within seconds, not days."""

ENTRIES_KEPT = 50
"""Recent ledger entries kept in status for people; the full audit goes to Events and logs."""

EntryAction = Literal[
    "reserve", "confirm", "refund", "lease", "lease-spend", "lease-return", "reset", "break-glass"
]

# The records below are created and changed on every charge, so they are plain slotted
# dataclasses: pydantic still validates, serializes and documents them at the boundary
# (reading a status, writing one, generating the CRD), but the engine builds and mutates
# them at the cost of ordinary Python objects.
_RECORD = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

KEY_MAX = 253
"""Characters in an account name or an idempotency key, on write as on read."""
REF_MAX = 512
"""Characters in what a ledger says about an object (its description, its API path)."""

Ref = Annotated[str, StringConstraints(max_length=REF_MAX)]
Name = Annotated[str, StringConstraints(max_length=KEY_MAX)]


@dataclass(frozen=True, slots=True)
class Witness:
    """How the reconciler recognises the admitted object once the API server stored it.

    `path` is the object's API path (what `kubectl get --raw` takes); the object found
    there must carry `uid`, and for an update at least `generation` (which the API server
    raises before validating admission), else the change it was charged for never landed.
    """

    __pydantic_config__ = _RECORD

    path: Ref
    uid: Name
    generation: int = 0


@dataclass(slots=True)
class Reservation:
    """Points held for an admitted object until it is seen (confirm) or expires (refund).

    Without a witness (the embedded ledger, the CLI) there is nothing to look for: the
    reservation is confirmed when it expires.
    """

    __pydantic_config__ = _RECORD

    amount: Amount
    created_at: Timestamp
    expires_at: Timestamp
    object: Ref = ""
    witness: Witness | None = None


@dataclass(slots=True)
class LeaseHold:
    """The part of an account lent to a BudgetLease and not yet reported as spent."""

    __pydantic_config__ = _RECORD

    amount: Amount
    expires_at: Timestamp
    holder: Name = ""


@dataclass(slots=True)
class Account:
    """One account's window: what it was given and where every point of it is now."""

    __pydantic_config__ = _RECORD

    allocation: Amount
    balance: Amount
    window_start: Timestamp
    resets_at: Timestamp | None = None
    spent: Amount = Decimal(0)
    reserved: Amount = Decimal(0)
    leased_out: Amount = Decimal(0)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    leases: dict[str, LeaseHold] = field(default_factory=dict)


@dataclass(slots=True)
class Entry:
    """One movement in the ledger, newest last."""

    __pydantic_config__ = _RECORD

    at: Timestamp
    account: Name
    action: EntryAction
    amount: Amount
    key: Name = ""
    object: Ref = ""


SettledKeys = Annotated[
    dict[str, None],
    BeforeValidator(lambda keys: dict.fromkeys(keys) if isinstance(keys, list) else keys),
    PlainSerializer(list, return_type=list[str], when_used="json"),
    WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": SETTLED_KEYS_KEPT}),
]
"""Recently settled idempotency keys, oldest first: a list on the wire, an ordered dict here
so that membership is one hash lookup."""


Accounts = Annotated[
    dict[str, Account],
    WithJsonSchema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": (
                "Per account: allocation, balance, spent, reserved, leasedOut, windowStart, "
                "resetsAt, reservations, leases. Written only by BudgetOps, through its "
                "models; the API server does not check the fields inside, which cost it "
                "~0.4 ms of CPU per account on every status write."
            ),
        }
    ),
]
"""The accounts of a ledger; opaque to the CRD schema (see the description)."""


class Ledger(Model):
    """Accounts plus what makes charges idempotent and legible."""

    model_config = ConfigDict(extra="ignore")

    accounts: Accounts = Field(default_factory=dict)
    settled: SettledKeys = Field(default_factory=dict)
    entries: list[Entry] = Field(default_factory=list, max_length=ENTRIES_KEPT)

    def remember_settled(self, key: str) -> None:
        """Add `key`, forgetting the oldest beyond SETTLED_KEYS_KEPT."""
        self.settled[key] = None
        while len(self.settled) > SETTLED_KEYS_KEPT:
            del self.settled[next(iter(self.settled))]
