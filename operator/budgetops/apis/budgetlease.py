"""BudgetLease: a slice of a parent budget lent to a holder that spends it locally."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from budgetops.apis.common import (
    NAME_PATTERN,
    Amount,
    Condition,
    Duration,
    Model,
    PositiveAmount,
    Timestamp,
    cel,
)

LeasePhase = Literal["Pending", "Active", "Exhausted", "Expired", "Released", "Revoked"]
ParentKind = Literal["TrustBudget", "RiskBudget"]


class BudgetRef(Model):
    """The parent budget and the account in it that lends the amount."""

    kind: ParentKind
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    account: str = Field(min_length=1, max_length=253)


class Holder(Model):
    """Who spends the lease: an LLM runtime, a CI system, identified by its own id."""

    kind: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    id: str = Field(min_length=1, max_length=253)


class BudgetLeaseSpec(Model):
    """How much is lent, for how long, and when the holder should ask for more."""

    model_config = cel(
        (
            "!has(self.refreshThreshold) || "
            "double(string(self.refreshThreshold)) < double(string(self.amount))",
            "refreshThreshold must be below amount",
        ),
        (
            "self.budgetRef == oldSelf.budgetRef",
            "budgetRef is immutable; create a new lease instead",
        ),
    )

    budget_ref: BudgetRef
    holder: Holder
    amount: PositiveAmount
    ttl: Duration = timedelta(hours=1)
    refresh_threshold: Amount | None = None

    @model_validator(mode="after")
    def _threshold_below_amount(self) -> Self:
        if self.refresh_threshold is not None and self.refresh_threshold >= self.amount:
            raise ValueError("refreshThreshold must be below amount")
        return self


class BudgetLeaseStatus(Model):
    """What was granted, what the holder reported spending, and the lease's phase."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    phase: LeasePhase = "Pending"
    granted: Amount = Decimal(0)
    spent: Amount = Decimal(0)
    remaining: Amount = Decimal(0)
    late_spent: Amount = Decimal(0)
    """Of `spent`, what was reported after the lease closed, for calls made before the close."""
    expires_at: Timestamp | None = None
    reported_requests: int = 0
    conditions: list[Condition] = Field(default_factory=list)
