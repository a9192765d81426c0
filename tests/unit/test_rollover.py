"""RiskBudget windows roll once, keep history, and grant earned capacity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgetops.apis.riskbudget import EarnedCapacity, Reliability, Thresholds
from budgetops.engine.bands import band_for, percent_used
from budgetops.engine.decisions import Release, admit_risk
from budgetops.engine.earned import earned_increase
from budgetops.engine.ledger import audit, confirm
from budgetops.engine.rollover import roll_risk_window

from .test_decisions import risk_budget

TTL = timedelta(minutes=5)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_rollover_closes_the_window_into_history_exactly_once() -> None:
    budget = risk_budget()
    spec, status = budget.spec, budget.status
    admit_risk(status, spec, release=Release("v1", 90, "standard"), now=utc(2026, 1, 20), ttl=TTL)
    confirm(status, key="v1", now=utc(2026, 1, 20))
    assert roll_risk_window(status, spec, now=utc(2026, 2, 1)) == 1
    assert roll_risk_window(status, spec, now=utc(2026, 2, 1, 0, 1)) == 0
    [closed] = status.history
    assert (closed.window.key, closed.allocated, closed.consumed) == ("2026-01", 120, 90)
    assert closed.band_reached == "Red"
    assert (status.window and status.window.key) == "2026-02"
    assert (status.consumed, status.band, status.band_reached) == (0, "Green", "Green")


def test_two_missed_windows_are_caught_up_with_an_empty_window_between() -> None:
    budget = risk_budget()
    spec, status = budget.spec, budget.status
    admit_risk(status, spec, release=Release("v1", 30, "standard"), now=utc(2026, 1, 5), ttl=TTL)
    confirm(status, key="v1", now=utc(2026, 1, 5))
    assert roll_risk_window(status, spec, now=utc(2026, 3, 10)) == 2
    assert [(h.window.key, h.consumed) for h in status.history] == [("2026-01", 30), ("2026-02", 0)]
    assert status.window is not None
    assert status.window.key == "2026-03"
    assert audit(status) == []


def test_a_reservation_in_flight_at_the_boundary_is_held_then_counted_once() -> None:
    budget = risk_budget()
    spec, status = budget.spec, budget.status
    late = utc(2026, 1, 31, 23, 59, 59)
    admit_risk(status, spec, release=Release("v1", 20, "standard"), now=late, ttl=TTL)
    roll_risk_window(status, spec, now=utc(2026, 2, 1))
    assert status.history[0].consumed == 20
    account = status.accounts["payments-api"]
    assert (account.reserved, account.balance) == (20, 100)
    confirm(status, key="v1", now=utc(2026, 2, 1, 0, 0, 5))  # counted in January, not again
    assert (account.spent, account.reserved, account.balance) == (0, 0, 120)
    assert audit(status) == []
    assert audit(status) == []


def test_carry_over_adds_the_unused_balance() -> None:
    budget = risk_budget(carryOver=True)
    spec, status = budget.spec, budget.status
    admit_risk(status, spec, release=Release("v1", 20, "standard"), now=utc(2026, 1, 5), ttl=TTL)
    confirm(status, key="v1", now=utc(2026, 1, 5))
    roll_risk_window(status, spec, now=utc(2026, 2, 1))
    assert status.allocation == 220


def test_improving_service_earns_capacity_at_rollover() -> None:
    budget = risk_budget()
    spec, status = budget.spec, budget.status
    figures = [("48", "15"), ("36", "12"), ("24", "8")]
    for month, (mttr, cfr) in enumerate(figures, start=1):
        roll_risk_window(status, spec, now=utc(2026, month, 2))
        status.reliability = Reliability(
            mttr_hours=Decimal(mttr), change_failure_rate_percent=Decimal(cfr)
        )
    roll_risk_window(status, spec, now=utc(2026, 4, 1))
    assert status.allocation == 144, "tier 2's 120 RP plus the seed's +20% = 24 RP"
    assert status.history[-1].earned_increase == 24
    assert "MTTR 48h -> 24h" in status.history[-1].earned_reason


@pytest.mark.parametrize(
    ("windows", "increase", "why"),
    [
        ([("48", "15", 0), ("36", "12", 0), ("24", "8", 0)], 24, "MTTR"),
        ([("10", "10", 0), ("9.5", "9.8", 0), ("9", "9.6", 0)], 14, "+11.8%"),
        ([("48", "15", 0), ("36", "12", 1), ("24", "8", 0)], 0, "P1 incident"),
        ([("48", "15", 0), ("50", "12", 0), ("24", "8", 0)], 0, "did not both improve"),
        ([("36", "12", 0), ("24", "8", 0)], 0, "needs 3 windows"),
    ],
)
def test_earned_increase_scales_between_min_and_max(
    windows: list[tuple[str, str, int]], increase: int, why: str
) -> None:
    figures = [
        Reliability(mttr_hours=Decimal(m), change_failure_rate_percent=Decimal(c), p1_incidents=p)
        for m, c, p in windows
    ]
    earned = earned_increase(EarnedCapacity(), base_allocation=120, windows=figures)
    assert earned.increase == increase
    assert why in earned.reason


@pytest.mark.parametrize(
    ("consumed", "allocation", "band"),
    [
        (0, 120, "Green"),
        (47, 120, "Green"),
        (48, 120, "Yellow"),
        (83, 120, "Yellow"),  # 69.2%: Yellow, even though it is close to red
        (84, 120, "Red"),
        (119, 120, "Red"),
        (120, 120, "Exhausted"),
        (0, 0, "Exhausted"),
    ],
)
def test_bands_follow_the_seed_thresholds(consumed: int, allocation: int, band: str) -> None:
    assert band_for(Decimal(consumed), Decimal(allocation), Thresholds()) == band


def test_band_is_compared_exactly_not_on_the_rounded_percentage() -> None:
    assert percent_used(Decimal("69.96"), Decimal(100)) == Decimal("70.0")
    assert band_for(Decimal("69.96"), Decimal(100), Thresholds()) == "Yellow"
