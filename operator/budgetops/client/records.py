"""Leases and the usage records charged to them: the SDK's local ledger."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from budgetops.client.config import MICRO
from budgetops.client.wire import JsonObject, integer, loads, money, text


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One provider call as reported: `seq` numbers it within its lease."""

    lease_id: str
    seq: int
    request_id: str
    tokens: int
    cost_usd: Decimal
    model: str
    provider: str
    timestamp: int

    @property
    def key(self) -> tuple[str, int]:
        """What the control plane counts a record once by."""
        return self.lease_id, self.seq

    def to_report(self) -> JsonObject:
        """The record as an entry of a batch report (the batch names the lease)."""
        return {
            "request_id": self.request_id,
            "seq": self.seq,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "model": self.model,
            "provider": self.provider,
            "timestamp": self.timestamp,
        }

    def to_fields(self) -> JsonObject:
        """The record on its own, as a line of the file queue holds it."""
        return {"lease_id": self.lease_id, **self.to_report()}

    @classmethod
    def from_line(cls, line: str) -> UsageRecord:
        """Raises ValueError or ProtocolError for a line that is not a record."""
        fields = loads(line)
        return cls(
            lease_id=text(fields, "lease_id"),
            seq=integer(fields, "seq"),
            request_id=text(fields, "request_id"),
            tokens=integer(fields, "tokens"),
            cost_usd=money(fields, "cost_usd"),
            model=text(fields, "model"),
            provider=text(fields, "provider"),
            timestamp=integer(fields, "timestamp"),
        )


@dataclass(slots=True)
class Lease:
    """A slice of the budget lent to this runtime, and what was charged to it so far."""

    lease_id: str
    granted: Decimal
    exact: Decimal = Decimal(0)
    """The sum of the exact costs charged."""
    reported: Decimal = Decimal("0.00")
    """The sum of the `cost_usd` reported: `exact` rounded up to the micro-dollar."""
    last_seq: int = 0
    unsettled: int = 0
    """Records charged but neither acknowledged nor set aside; the lease is released at 0."""

    @property
    def remaining(self) -> Decimal:
        return self.granted - self.reported

    def charge(self, cost: Decimal) -> tuple[int, Decimal]:
        """The next seq and the amount to report for `cost`, carrying what is finer than the
        protocol's micro-dollar forward so the reported total is always the exact total
        rounded up to the micro-dollar."""
        self.exact += cost
        total = self.exact.quantize(MICRO, rounding=ROUND_CEILING)
        due = total - self.reported
        self.reported = total
        self.last_seq += 1
        self.unsettled += 1
        return self.last_seq, due
