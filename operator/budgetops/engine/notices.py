"""What the reconciler has to tell people: one Notice per transition, already in words.

The engine decides *that* something happened and says it with the numbers; Events,
notification channels and logs only carry the words. Keeping the wording here keeps it the
same everywhere a person reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Severity = Literal["info", "warning", "critical"]

NoticeReason = Literal[
    "BandChanged",
    "WindowClosed",
    "EarnedCapacity",
    "AccountsReset",
    "LowBalance",
    "Exhausted",
    "RapidDepletion",
    "Recovered",
    "ReservationRefunded",
    "ReservationUnverified",
    "LeasesExpired",
    "BreakGlassRequested",
    "BreakGlassApproved",
    "BreakGlassUsed",
]


@dataclass(frozen=True, slots=True)
class Notice:
    """One transition of one budget, as a person should read it.

    `budget` names it the way kubectl does (`RiskBudget payments/checkout`, `TrustBudget
    issuance`); `summary` is one line with the numbers (`checkout: Green -> Yellow, 80 / 200
    RP (40%)`); `details` add what to do, what is still allowed and why; `headline` is what a
    message's subject says of it (`Risk Budget at 40% for checkout`), empty where the
    reason and the budget say enough.
    """

    budget: str
    reason: NoticeReason
    summary: str
    severity: Severity = "info"
    at: datetime | None = None
    details: tuple[str, ...] = ()
    headline: str = ""

    @property
    def event_type(self) -> Literal["Normal", "Warning"]:
        """The Kubernetes Event type: anything a person should act on is a Warning."""
        return "Normal" if self.severity == "info" else "Warning"
