"""What a request owes: the plain inputs of a charge, named before any store is touched.

`admission/classify.py` turns an AdmissionRequest into these, the CLI builds them from its
flags, and `usecases/charging.py` charges them. They hold no budget, only its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from budgetops.apis.ledger import Witness
from budgetops.apis.resources import BudgetKey
from budgetops.engine.decisions import BreakGlassAsk, Release


class Refused(ValueError):
    """The request cannot be charged as sent; the message tells the requester why."""


@dataclass(frozen=True)
class TrustCharge:
    """One issuance owed to an account of a TrustBudget, under idempotency key `key`."""

    budget: BudgetKey
    account: str
    cost: Decimal
    key: str
    ref: str
    witness: Witness | None = None
    settle_now: bool = False
    """Confirm at once: nothing a watch could see will witness it later."""
    break_glass: BreakGlassAsk | None = None
    fail_open: bool = False
    """The budget's `failOpen`: a store that cannot answer in time admits it uncharged."""


@dataclass(frozen=True)
class RiskCharge:
    """One release owed to a RiskBudget."""

    budget: BudgetKey
    release: Release
    settle_now: bool = False
    """Confirm at once (a release the CLI consumes: no object will be watched)."""
    fail_open: bool = False
    """The budget's `failOpen`: a store that cannot answer in time admits it uncharged."""


@dataclass(frozen=True)
class Classified:
    """Everything one request should be charged for (often nothing)."""

    trust: list[TrustCharge] = field(default_factory=list)
    risk: list[RiskCharge] = field(default_factory=list)
