"""The ledger as it is persisted in a budget's status (and in the embedded store).

One shape serves every kind so that one engine can charge them all:
`allocation = balance + spent + reserved + leasedOut` for each account.
`reserved` and `leasedOut` are kept beside their itemised maps because they are what
`kubectl get` and alerts read; the engine keeps both in step and `audit` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from budgetops.apis.audit import AuditHead
from budgetops.apis.common import Amount, Model, Timestamp

KEY_KEPT = timedelta(minutes=2)
"""How long an object's key (its uid, or its uid and pod template) is remembered after it
settled. The API server sends one object's admission again only while the request that
carries it lasts: at most its deadline (`--request-timeout`, 60 s by default; each webhook
call takes at most 30 s and is retried only within that deadline), and the reservation
keeps the key known until it settles. Two default deadlines leave room for clocks that
differ between replicas, and no more: until the storage redesign the keys live in the
status, so their number is the rate of charges times this. Memory is bounded by that rate,
never by a count that could refuse a charge."""

KEYS_FORGOTTEN_EVERY = timedelta(seconds=30)
"""Keys past KEY_KEPT are let go together once the oldest is this much past it, so a charge
rarely pays for a pass over them."""

BEFORE_WINDOWS = datetime(1970, 1, 1, tzinfo=UTC)
"""When a key read from an older status (a bare list) is taken to have settled: long ago,
so it is let go with the next keys that are."""

ENTRIES_KEPT = 50
"""Recent ledger entries kept in status for people; the full record is the audit trail."""

HELD_AUDIT_MAX = 200
"""Sealed audit lines a budget holds until the operator publishes them (records a command
wrote, such as `kubectl budget consume`): a write that would hold more is refused."""
HELD_LINE_MAX = 32 * 1024
"""One held line: a record or a signed head, never an envelope-sized blob of its own."""

MovementAction = Literal[
    "reserve",
    "confirm",
    "refund",
    "lease",
    "lease-spend",
    "lease-return",
    "reset",
]
"""What moves points between balance, reservations, leases and spent."""

EntryAction = Literal[MovementAction, "break-glass", "deny"]
"""An entry is a movement, or a decision that moved nothing (it carries its verdict)."""

# The records below are created and changed on every charge, so they are plain slotted
# dataclasses: pydantic still validates, serializes and documents them at the boundary
# (reading a status, writing one, generating the CRD), but the engine builds and mutates
# them at the cost of ordinary Python objects.
_RECORD = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True
)

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

    `created`: the request created the object. The API server gives every create a uid of
    its own before validating admission and admits it only before storing it, so once the
    object is seen no request can carry its key again: the key is not remembered after
    (KEY_KEPT), which is most of what a budget charged many times a second keeps.
    """

    __pydantic_config__ = _RECORD

    path: Ref
    uid: Name
    generation: int = 0
    created: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """Points held for an admitted object until it is seen (confirm) or expires (refund).
    Frozen: a reservation is added and taken out, never changed, and the embedded ledger
    keeps each one's encoding by identity (store.rows.Parts).

    Without a witness (the embedded ledger, the CLI) there is nothing to look for: the
    reservation is confirmed when it expires.
    """

    __pydantic_config__ = _RECORD

    amount: Amount
    created_at: Timestamp
    expires_at: Timestamp
    object: Ref = ""
    witness: Witness | None = None


LeaseState = Literal["active", "released", "expired", "revoked"]

REPORTS_AHEAD_MAX = 1024
"""How far past its contiguous mark a lease counts numbered reports: the set of those counted
above the mark never holds more, so a lease's idempotency state stays bounded."""

UNNUMBERED_MAX = 1024
"""Unnumbered reports (from runtimes that send no `seq`) one lease counts at most. Each is
recognised by its request id for the life of the lease, so a replay is never counted twice
however late it comes; past this bound a new one is refused, never counted unchecked."""

COSTS_KEPT = 256
"""Numbered reports below a lease's mark whose cost is kept, besides those above it and every
unnumbered one: a replay among them with another cost is a conflict, not a duplicate. Small,
as every status write carries it: a resent batch sits just below the mark."""


@dataclass(slots=True)
class LeaseHold:
    """A slice of an account lent to a holder, and what the holder reported spending of it.

    While active, `amount` is what is still lent (`granted - spent`). Closed (released,
    expired, revoked), `amount` is zero and `returned` is what went back to the balance: late
    reports of calls made before the close are still counted against that, once each, until
    the hold is forgotten (its ttl after it closed), and add up in `late_spent`.
    """

    __pydantic_config__ = _RECORD

    amount: Amount
    expires_at: Timestamp
    holder: Name = ""
    agent: Name = ""
    granted: Amount = Decimal(0)
    spent: Amount = Decimal(0)
    created_at: Timestamp | None = None
    state: LeaseState = "active"
    closed_at: Timestamp | None = None
    returned: Amount = Decimal(0)
    reported_through: int = 0
    """Every numbered report up to this one was counted."""
    counted_above: list[int] = field(default_factory=list)
    """Numbered reports above `reported_through` that were counted, ascending."""
    recent_requests: list[Name] = field(default_factory=list)
    """Request ids of unnumbered reports counted before their costs were kept (a status
    written by an older BudgetOps); newer ones are keys of `costs`."""
    costs: dict[Name, Amount] = field(default_factory=dict)
    """What the reports counted cost: every unnumbered one by its request id, numbered ones
    as `#<seq>` for those above the mark and the COSTS_KEPT below it."""
    token: Name = ""
    """The token id the lease was granted under: once a rotation or revocation closed the
    lease, that token may still report what was spent before the close."""
    late_spent: Amount = Decimal(0)
    """Of `spent`, what was reported after the lease closed (calls made before the close)."""

    def unnumbered(self) -> list[str]:
        """Request ids of every unnumbered report counted (UNNUMBERED_MAX at most)."""
        return [*self.recent_requests, *(key for key in self.costs if not key.startswith("#"))]


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


# Frozen, as a reservation is (the docstring is the CRD's description).
@dataclass(frozen=True, slots=True)
class Entry:
    """One movement in the ledger, newest last."""

    __pydantic_config__ = _RECORD

    at: Timestamp
    account: Name
    action: EntryAction
    amount: Amount
    key: Name = ""
    object: Ref = ""
    verdict: Annotated[str, StringConstraints(max_length=71)] = ""
    """The digest of the signed verdict on this decision, when one was made."""


def _oldest_first(keys: dict[str, datetime]) -> dict[str, datetime]:
    """Keys in the order they settled, which `Ledger.forget_settled` relies on. The API
    server hands an object's keys back sorted by name; sorting keys already in order (as
    the embedded ledger keeps them) is one linear pass."""
    return dict(sorted(keys.items(), key=itemgetter(1)))


SettledKeys = Annotated[
    dict[Name, Timestamp],
    BeforeValidator(
        lambda keys: dict.fromkeys(keys, BEFORE_WINDOWS) if isinstance(keys, list) else keys
    ),
    AfterValidator(_oldest_first),
    WithJsonSchema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": (
                "Settled object keys and when each settled, kept for minutes after "
                "(KEY_KEPT). Written only by BudgetOps, through its models."
            ),
        }
    ),
]
"""Settled object keys and when they settled, oldest first: membership is one hash lookup."""


@dataclass(slots=True)
class ReleaseMark:
    """A declared release id charged in the current window, and what it was charged for."""

    __pydantic_config__ = _RECORD

    of: Ref
    """The object and pod template (`Deployment payments/api, pod template 1a2b...`); empty
    for a release declared without an object (`budgetops consume`)."""
    at: Timestamp


Releases = Annotated[
    dict[Name, ReleaseMark],
    WithJsonSchema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": (
                "Release ids charged in the current window, each with what it was charged "
                "for (of) and when (at). Written only by BudgetOps, through its models."
            ),
        }
    ),
]
"""Declared release ids of the current window: replayed by the same object and template only."""


GRANTS_MAX = 32
"""Grants a budget holds at once: each is a line of status and of `kubectl budget status`, so
a grant past this is refused until one expires."""
GRANT_LONGEST = timedelta(days=366)
"""How far ahead a grant may end: a lasting change belongs in the spec."""
REASON_MAX = 1024
"""Characters of a grant's or an adjustment's reason kept in status and the audit trail."""


@dataclass(frozen=True, slots=True)
class Grant:
    """Extra allocation for one account until `expires_at`, given by a person with a reason;
    or, on a RiskBudget, with `change_class` and no amount, an exception letting that class
    through any band until then.

    It is in the account's allocation while it lasts; at expiry the allocation drops back,
    never below what is already committed, and the reconciler takes the grant out."""

    __pydantic_config__ = _RECORD

    account: Name
    amount: Amount
    by: Name
    reason: Annotated[str, StringConstraints(max_length=REASON_MAX)]
    created_at: Timestamp
    expires_at: Timestamp
    change_class: Annotated[str, StringConstraints(max_length=32)] = ""


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
    releases: Releases = Field(default_factory=dict)
    entries: list[Entry] = Field(default_factory=list, max_length=ENTRIES_KEPT)
    audit_head: AuditHead = Field(default_factory=AuditHead)
    audit_held: list[Annotated[str, StringConstraints(max_length=HELD_LINE_MAX)]] = Field(
        default_factory=list,
        max_length=HELD_AUDIT_MAX,
        description=(
            "Sealed audit lines written by a command outside the operator (kubectl budget "
            "consume, adjust), held here until the operator publishes them in chain order."
        ),
    )
    grants: list[Grant] = Field(
        default_factory=list,
        max_length=GRANTS_MAX,
        description="Extra allocation given by hand until a time (budgetops grant).",
    )
    _reserved_in: dict[str, str] | None = PrivateAttr(default=None)
    """Which account holds the reservation under each key: built on first use, then kept by
    `reserved` / `unreserved`, so finding a key costs the same in a budget of ten accounts
    or a hundred thousand. Reservations change only through those two."""
    _audit: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    """Audit records of this change, not yet chained: the store seals them into the chain
    in the write that stores the change, and publishes them once that write succeeded."""

    def queue_audit(self, record: dict[str, Any]) -> None:
        """Queue one audit record of the change being made (see `_audit`)."""
        self._audit.append(record)

    def queued_audit(self) -> list[dict[str, Any]]:
        """The audit records queued by the change being made, oldest first."""
        return self._audit

    def reservation_of(self, key: str) -> str | None:
        """The account holding a reservation under `key`, if any."""
        if self._reserved_in is None:
            self._reserved_in = {
                held: name
                for name, account in self.accounts.items()
                for held in account.reservations
            }
        name = self._reserved_in.get(key)
        if name is None:
            return None
        account = self.accounts.get(name)
        # An account taken away with its reservations leaves a stale name: not reserved.
        return name if account is not None and key in account.reservations else None

    def reserved(self, account: str, key: str, held: Reservation) -> None:
        """Hold `held` in `account` under `key` (the account exists)."""
        self.accounts[account].reservations[key] = held
        if self._reserved_in is not None:
            self._reserved_in[key] = account

    def unreserved(self, account: str, key: str) -> Reservation:
        """Take the reservation under `key` out of `account` and return it."""
        held = self.accounts[account].reservations.pop(key)
        if self._reserved_in is not None:
            self._reserved_in.pop(key, None)
        return held

    def remember_settled(self, key: str, at: datetime) -> None:
        """Remember the object key `key` as settled at `at`, for KEY_KEPT. A key settled by
        a clock behind the newest one's is stamped as that one: the keys stay in the order
        they settled, which `forget_settled` relies on, in memory as in any store that reads
        them back sorted (it is kept that much longer, never less)."""
        settled = self.settled
        settled.pop(key, None)
        if settled:
            at = max(at, next(reversed(settled.values())))
        settled[key] = at

    def forget_settled(self, now: datetime) -> None:
        """Let go of keys settled more than KEY_KEPT before `now`, in batches (see
        KEYS_FORGOTTEN_EVERY): keys are kept in the order they settled, so the first one
        tells whether a pass is due, and a pass removes keys from the old end only, one by
        one (a store that keeps a row per key writes just those). A key stamped after `now`
        (by a clock that was ahead) counts as settled now, so it cannot hold the others back."""
        settled = self.settled
        if not settled:
            return
        cutoff = now - KEY_KEPT
        if cutoff - KEYS_FORGOTTEN_EVERY < next(iter(settled.values())) <= now:
            return
        ahead = [key for key, at in settled.items() if at > now]
        for key in ahead:  # re-dated to now, and so moved to where now belongs: the end
            del settled[key]
            settled[key] = now
        expired = []
        for key, at in settled.items():
            if at >= cutoff:
                break
            expired.append(key)
        for key in expired:
            del settled[key]

    def forget_releases_before(self, instant: datetime) -> None:
        """Let go of release ids charged before `instant` (their window closed), except
        those still reserved (their object is still in flight)."""
        for key in [key for key, mark in self.releases.items() if mark.at < instant]:
            if self.reservation_of(key) is None:
                del self.releases[key]
