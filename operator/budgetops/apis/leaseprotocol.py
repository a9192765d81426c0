"""The lease API's requests, as the budget control protocol spells them (`docs/lease-api.md`).

Field names are the protocol's (snake_case), so runtimes that speak it need no change. Money
arrives as JSON numbers read as Decimal (never float), with at most six decimals, and is read
by `numbers.amount`: bounded before any arithmetic, and in the form the ledger stores.
The OpenAPI document is generated from these models.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from budgetops.apis.agents import BUDGET_ID_PATTERN, PROVIDER_PATTERN
from budgetops.apis.numbers import PLACES, amount

LEASE_ID_PATTERN = r"^lease_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
RUNTIME_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,253}$"
SEMVER_PATTERN = (
    r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
    r"(-[0-9A-Za-z.-]{1,64})?(\+[0-9A-Za-z.-]{1,64})?$"
)
REQUEST_MAX = Decimal(1000)
"""The most one handshake or refresh may ask for, in USD."""
COST_MAX = Decimal(1_000_000)
"""The most one reported call may cost, in USD: far above any call, far below overflow."""
BATCH_MAX = 1000


def _money(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a number of USD, such as 10.00")
    return amount(value)


def _schema(minimum: Decimal, maximum: Decimal, *, exclusive: bool) -> dict[str, Any]:
    bound = "exclusiveMinimum" if exclusive else "minimum"
    return {
        "type": "number",
        bound: float(minimum),
        "maximum": float(maximum),
        "multipleOf": float(Decimal(10) ** -PLACES),
    }


def _requested(value: object) -> Decimal:
    usd = _money(value)
    if not 0 < usd <= REQUEST_MAX:
        raise ValueError(f"must be above 0 and at most {REQUEST_MAX} USD, not {usd}")
    return usd


def _cost(value: object) -> Decimal:
    usd = _money(value)
    if not 0 <= usd <= COST_MAX:
        raise ValueError(f"must be between 0 and {COST_MAX} USD, not {usd}")
    return usd


Requested = Annotated[
    Decimal,
    BeforeValidator(_requested),
    WithJsonSchema(_schema(Decimal(0), REQUEST_MAX, exclusive=True)),
]
Cost = Annotated[
    Decimal,
    BeforeValidator(_cost),
    WithJsonSchema(_schema(Decimal(0), COST_MAX, exclusive=False)),
]
LeaseId = Annotated[StrictStr, Field(pattern=LEASE_ID_PATTERN)]


def _whole(value: object) -> int:
    """A JSON integer, which JSON Schema also lets be written `5.0`; never a string, a
    boolean, a fraction or a number of more than 20 digits."""
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and len(value.as_tuple().digits) <= 20
        and value.adjusted() < 20
        and value == value.to_integral_value()
    ):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value.bit_length() > 64:
        raise ValueError("must be a whole number")
    return value


Whole = Annotated[int, BeforeValidator(_whole)]


class Message(BaseModel):
    """Fields the protocol does not know are ignored, so newer runtimes still talk to us."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HandshakeRequest(Message):
    ic_token: StrictStr = Field(min_length=1, max_length=65536)
    """Bounded by the body; `tokens.verify` refuses past 4096 bytes with its own reason."""
    requested_budget: Requested
    runtime_version: StrictStr = Field(pattern=SEMVER_PATTERN)
    runtime_id: StrictStr | None = Field(default=None, pattern=RUNTIME_ID_PATTERN)
    provider: StrictStr | None = Field(default=None, pattern=PROVIDER_PATTERN)
    """Which of the agent's providers to lease with (`agent create --also-provider`); its
    first when absent."""


class UsageRecord(Message):
    request_id: StrictStr = Field(pattern=REQUEST_ID_PATTERN)
    seq: Annotated[int, Field(ge=1, le=2**53), BeforeValidator(_whole)] | None = None
    tokens: Whole = Field(ge=0, le=10**12)
    cost_usd: Cost
    model: StrictStr = Field(min_length=1, max_length=128)
    provider: StrictStr = Field(min_length=1, max_length=128)
    timestamp: Whole = Field(ge=0, le=2**53)


class ReportRequest(Message):
    """One record (the protocol's form) or a batch of them for one lease."""

    lease_id: LeaseId
    reports: list[UsageRecord] = Field(default_factory=list, max_length=BATCH_MAX)

    @model_validator(mode="before")
    @classmethod
    def _single(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reports" not in data:
            return {"lease_id": data.get("lease_id"), "reports": [data]}
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.reports:
            raise ValueError("reports: at least one record is needed")
        return self


class RefreshRequest(Message):
    lease_id: LeaseId
    budget_id: StrictStr = Field(pattern=BUDGET_ID_PATTERN)
    requested_budget: Requested
    current_remaining: Cost
    total_spent: Cost


class ReleaseRequest(Message):
    lease_id: LeaseId
