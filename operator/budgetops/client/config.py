"""The client's settings, checked once so the hot path never has to."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from budgetops.client.notices import UsageWarning

Clock = Callable[[], float]
"""Unix seconds; the timestamp of each usage record."""

CENT = Decimal("0.01")
MICRO = Decimal("0.000001")
"""The finest amount the protocol carries: a cost is reported to the micro-dollar."""
MAX_REQUEST = Decimal("1000")
_RUNTIME_ID = re.compile(r"[A-Za-z0-9._:-]{1,253}")
_PROVIDER = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""`apis.agents.PROVIDER_PATTERN`: the SDK imports nothing of the operator."""


class ClientOptions(TypedDict, total=False):
    """The optional settings, as keyword arguments of both clients."""

    requested_budget: Decimal
    refresh_threshold: Decimal
    batch_size: int
    flush_interval: float
    queue_path: Path | None
    runtime_id: str | None
    provider: str | None
    runtime_version: str
    retries: int
    backoff: float
    drain_interval: float
    timeout: float
    on_warning: Callable[[UsageWarning], None] | None


@dataclass(frozen=True)
class ClientConfig:
    """Where the control plane is, who the runtime is, and how it borrows and reports."""

    base_url: str
    identity_token: str
    requested_budget: Decimal = Decimal("10.00")
    """What each lease asks for (USD, above 0, at most 1000, at most two decimals)."""
    refresh_threshold: Decimal = Decimal("1.00")
    """Ask for a new lease once the current one has less than this left."""
    batch_size: int = 10
    """Send the queued records once this many wait..."""
    flush_interval: float = 0.1
    """...or once the oldest has waited this many seconds."""
    queue_path: Path | None = None
    """JSON Lines file for records the control plane did not acknowledge; None keeps them in
    memory only, lost when the process ends."""
    runtime_id: str | None = None
    provider: str | None = None
    """Which of the agent's providers to lease with (`agent create --also-provider`); None:
    the agent's first."""
    runtime_version: str = "0.1.0"
    retries: int = 3
    """Retries of a request after the first attempt, on errors that may pass."""
    backoff: float = 0.05
    """Seconds before the first retry, doubled before each next one."""
    drain_interval: float = 5.0
    """Seconds between attempts to send the file queue while the control plane is away."""
    timeout: float = 10.0
    """Seconds a request may take, end to end."""
    on_warning: Callable[[UsageWarning], None] | None = None
    """Called, on the client's loop, when a lease or the account reaches the budget's
    warning share; keep it quick (it runs between calls)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {self.base_url!r}")
        if not self.identity_token:
            raise ValueError("identity_token is empty")
        _check_money("requested_budget", self.requested_budget)
        if not Decimal(0) < self.requested_budget <= MAX_REQUEST:
            raise ValueError(f"requested_budget must be above 0 and at most {MAX_REQUEST} USD")
        _check_money("refresh_threshold", self.refresh_threshold)
        if self.batch_size < 1 or self.retries < 0:
            raise ValueError("batch_size must be at least 1 and retries at least 0")
        if min(self.flush_interval, self.drain_interval, self.timeout) <= 0 or self.backoff < 0:
            raise ValueError("intervals and timeouts must be positive, backoff not negative")
        if self.runtime_id is not None and not _RUNTIME_ID.fullmatch(self.runtime_id):
            raise ValueError("runtime_id must be 1 to 253 characters of [A-Za-z0-9._:-]")
        if self.provider is not None and not _PROVIDER.fullmatch(self.provider):
            raise ValueError(
                f"provider must be a provider id such as openai, not {self.provider!r}"
            )


def _check_money(name: str, value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{name} must be a finite Decimal, not {value!r}")
    if value < 0 or value != value.quantize(CENT):
        raise ValueError(f"{name} must be 0 or more with at most two decimals, not {value}")
