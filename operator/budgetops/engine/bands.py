"""Bands: how worried to be about a budget, from the share of it already consumed."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from budgetops.apis.riskbudget import Band, Thresholds


def percent_used(consumed: Decimal, allocation: Decimal) -> Decimal:
    """Consumed as a percentage of the allocation, rounded to one decimal, for display."""
    if allocation <= 0:
        return Decimal(100)
    return (consumed * 100 / allocation).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def band_for(consumed: Decimal, allocation: Decimal, thresholds: Thresholds) -> Band:
    """Green below yellow, Yellow below red, Red below exhausted, then Exhausted.

    Compared exactly (consumed * 100 against threshold * allocation), never on the rounded
    percentage, so 69.96% is still Yellow at a 70% red threshold.
    """
    if allocation <= 0:
        return "Exhausted"
    percent = consumed * 100
    if percent >= thresholds.exhausted * allocation:
        return "Exhausted"
    if percent >= thresholds.red * allocation:
        return "Red"
    if percent >= thresholds.yellow * allocation:
        return "Yellow"
    return "Green"


BAND_ORDER: dict[Band, int] = {"Green": 0, "Yellow": 1, "Red": 2, "Exhausted": 3}


def worse(first: Band, second: Band) -> Band:
    """The more severe of two bands (for `bandReached` over a window)."""
    return first if BAND_ORDER[first] >= BAND_ORDER[second] else second
