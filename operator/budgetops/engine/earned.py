"""Earned capacity: a service that keeps getting more reliable earns a larger next window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise

from budgetops.apis.riskbudget import EarnedCapacity, Reliability

FULL_CREDIT_IMPROVEMENT = Decimal("0.40")
"""Average relative improvement at which the maximum increase is earned (linear below it)."""


@dataclass(frozen=True)
class Earned:
    """Points added to the next window and the sentence recorded in history."""

    increase: int
    reason: str


def _improvement(first: Decimal, last: Decimal) -> Decimal:
    return (first - last) / first if first > 0 else Decimal(0)


def earned_increase(
    config: EarnedCapacity, *, base_allocation: int, windows: Sequence[Reliability]
) -> Earned:
    """Increase for the next window from the reliability of the last windows, oldest first.

    Eligible when MTTR and change-failure rate both fell in each of the last
    `requiredImprovementWindows` transitions and no window in that span had a P1 incident.
    The increase runs from the minimum to the maximum percent in proportion to the average
    relative improvement of the two figures, reaching the maximum at 40%.
    """
    needed = config.required_improvement_windows + 1
    if not config.enabled:
        return Earned(0, "")
    recent = list(windows)[-needed:]
    if len(recent) < needed:
        return Earned(0, f"needs {needed} windows of reliability figures, has {len(recent)}")
    mttr = [w.mttr_hours for w in recent]
    cfr = [w.change_failure_rate_percent for w in recent]
    if any(v is None for v in mttr + cfr):
        return Earned(0, "MTTR or change-failure rate was not reported for every window")
    if any(w.p1_incidents for w in recent):
        return Earned(0, "a P1 incident occurred in the evaluation period")
    mttr_values = [v for v in mttr if v is not None]
    cfr_values = [v for v in cfr if v is not None]
    for series in (mttr_values, cfr_values):
        if any(later >= earlier for earlier, later in pairwise(series)):
            return Earned(0, "MTTR and change-failure rate did not both improve every window")
    mttr_gain = _improvement(mttr_values[0], mttr_values[-1])
    cfr_gain = _improvement(cfr_values[0], cfr_values[-1])
    average = (mttr_gain + cfr_gain) / 2
    span = config.max_increase_percent - config.min_increase_percent
    credit = min(average / FULL_CREDIT_IMPROVEMENT, Decimal(1))
    percent = config.min_increase_percent + span * credit
    increase = int((base_allocation * percent / 100).to_integral_value(rounding=ROUND_FLOOR))
    reason = (
        f"MTTR {mttr_values[0]}h -> {mttr_values[-1]}h ({mttr_gain:.0%} better), "
        f"change-failure rate {cfr_values[0]}% -> {cfr_values[-1]}% ({cfr_gain:.0%} better) "
        f"over {config.required_improvement_windows} windows: +{percent:.1f}% = +{increase} RP"
    )
    return Earned(increase, reason)
