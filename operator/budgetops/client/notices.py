"""What the SDK tells a runtime besides refusals: a lease or its account nearing its end."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class UsageWarning:
    """A lease or the agent's account at or past its budget's warning share
    (`spec.sessions.warnAtPercent`): handed to `on_warning` once per lease, or once per
    client for the account."""

    scope: str
    """"lease" or "account"."""
    percent_used: Decimal
    message: str
