"""What the SDK raises, under one base class so a gateway can catch every refusal at once."""

from __future__ import annotations

from decimal import Decimal


class BudgetError(Exception):
    """Every error the SDK raises on purpose."""


class BudgetExceeded(BudgetError):
    """The estimate is more than the lease has left; a refresh may bring more."""

    def __init__(self, estimated: Decimal, remaining: Decimal) -> None:
        super().__init__(
            f"the estimated cost of {estimated} USD is more than the {remaining} USD left on "
            "the lease: lower the estimate or retry once the lease is refreshed"
        )
        self.estimated = estimated
        self.remaining = remaining


class CallOverLimit(BudgetError):
    """The estimate is more than one call may cost under the agent's budget
    (`spec.sessions.maxCallCost`, told with each lease): no refresh will help."""

    def __init__(self, estimated: Decimal, limit: Decimal) -> None:
        super().__init__(
            f"the estimated cost of {estimated} USD is more than the {limit} USD one call may "
            "cost under this budget: split the call, or ask for a higher limit"
        )
        self.estimated = estimated
        self.limit = limit


class BudgetExhausted(BudgetError):
    """The control plane has nothing more to lend: no refresh will help."""


class InvalidToken(BudgetError):
    """The identity token was refused (malformed, expired, rotated or revoked): the runtime
    needs a new one, and retrying with this one cannot succeed."""


class ProtocolError(BudgetError):
    """The control plane answered with an error, or could not be reached (`status` None)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: unreachable, overloaded, or a report
        sent ahead of the records before it."""
        return (
            self.status is None
            or self.status >= 500
            or self.status in (408, 429)
            or self.code == "REPORT_OUT_OF_ORDER"
        )
