"""TrustBudget account alerts: low balance, exhaustion and rapid depletion.

Low balance and exhaustion are read off the account. Rapid depletion needs to know how
much was consumed recently, which no status field holds (it would grow with every account);
the reconciler keeps a few usage samples per account in memory instead. After a restart an
account is judged from its window start until new samples accumulate, so a burst that
straddles the restart can go unannounced; a raised alert is persisted and never repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from budgetops.apis.ledger import Account
from budgetops.apis.trustbudget import AlertKind, Alerts

SAMPLES_PER_PERIOD = 4
"""Samples taken per rapid-depletion period: a burst is caught within a quarter period."""


@dataclass(frozen=True, slots=True)
class _Sample:
    at: datetime
    used: Decimal


@dataclass
class UsageSamples:
    """One budget's recent `used` readings per account, oldest first.

    One per budget, so that reconciles of different budgets (on different threads) never
    share one; reconciles of the same budget are serialized by the store.
    """

    _samples: dict[str, list[_Sample]] = field(default_factory=dict)

    def consumed_within(
        self,
        account: str,
        *,
        used: Decimal,
        now: datetime,
        within: timedelta,
        window_start: datetime,
    ) -> Decimal:
        """Record `used` at `now` and say how much of it was consumed within `within`.

        Called again at the same instant it records nothing new, so a reconcile retried
        after a write conflict gets the same answer.
        """
        since = now - within
        # A reading above today's belongs to a window that has since reset.
        kept = [s for s in self._samples.get(account, ()) if s.at >= since and s.used <= used]
        candidates = kept
        if window_start >= since:
            candidates = [_Sample(window_start, Decimal(0)), *kept]
        consumed = used - candidates[0].used if candidates else Decimal(0)
        newest = kept[-1] if kept else None
        if newest is None or (
            used != newest.used and now - newest.at >= within / SAMPLES_PER_PERIOD
        ):
            kept.append(_Sample(now, used))
        self._samples[account] = kept
        return consumed

    def next_reading(self, account: str, *, used: Decimal, within: timedelta) -> datetime | None:
        """When a reading of `used`, skipped for coming too soon after the newest kept one,
        would be kept: someone must look again by then, or the burst it belongs to may go
        unseen (None: nothing is waiting to be recorded)."""
        kept = self._samples.get(account)
        if not kept or kept[-1].used == used:
            return None
        return kept[-1].at + within / SAMPLES_PER_PERIOD

    def forget(self, keep: set[str]) -> None:
        """Drop the samples of accounts the budget no longer has."""
        for account in [a for a in self._samples if a not in keep]:
            del self._samples[account]

    def __len__(self) -> int:
        return len(self._samples)


def account_alerts(
    account: Account, alerts: Alerts, *, consumed_recently: Decimal
) -> list[AlertKind]:
    """The alerts `account` deserves now, most severe first; a percent of 0 turns one off.
    Both thresholds are strict, as the seed states them: less than `lowBalancePercent` left,
    more than `rapidDepletion.percent` consumed within its period."""
    raised: list[AlertKind] = []
    allocation = account.allocation
    if alerts.exhaustion and account.balance <= 0:
        raised.append("Exhausted")
    low = alerts.low_balance_percent
    if low and account.balance * 100 < low * allocation:
        raised.append("LowBalance")
    rapid = alerts.rapid_depletion.percent
    if rapid and consumed_recently > 0 and consumed_recently * 100 > rapid * allocation:
        raised.append("RapidDepletion")
    return raised
