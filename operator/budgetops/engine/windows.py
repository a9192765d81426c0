"""Budget windows: which window an instant falls in, always on UTC boundaries.

Windows are computed from the calendar (monthly, weekly, sprint) or from a persisted start
and an interval (TrustBudget resets), never from when a timer happened to fire, so a restart
or a missed boundary lands in the same window a punctual operator would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from budgetops.apis.riskbudget import Window as WindowSpec


@dataclass(frozen=True)
class Window:
    """A half-open interval [start, end) with the key people read (`2026-11`)."""

    key: str
    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def month_window(at: datetime) -> Window:
    """The calendar month in UTC: `YYYY-MM`, from the 1st at 00:00Z."""
    at = at.astimezone(UTC)
    start = _midnight(date(at.year, at.month, 1))
    end = _midnight(date(at.year + at.month // 12, at.month % 12 + 1, 1))
    return Window(f"{at.year:04d}-{at.month:02d}", start, end)


def week_window(at: datetime) -> Window:
    """The ISO week in UTC, Monday 00:00Z to Monday: `YYYY-Www`."""
    day = at.astimezone(UTC).date()
    start_day = day - timedelta(days=day.weekday())
    year, week, _ = start_day.isocalendar()
    start = _midnight(start_day)
    return Window(f"{year:04d}-W{week:02d}", start, start + timedelta(days=7))


def sprint_window(at: datetime, *, anchor: date, length_days: int) -> Window:
    """The sprint holding `at`: sprints of `length_days` tile time from `anchor` both ways."""
    origin = _midnight(anchor)
    length = timedelta(days=length_days)
    index = (at.astimezone(UTC) - origin) // length
    start = origin + index * length
    return Window(f"sprint-{start.date().isoformat()}", start, start + length)


def window_at(spec: WindowSpec, at: datetime) -> Window:
    """The window of a RiskBudget's cadence that holds `at`."""
    if spec.cadence == "monthly":
        return month_window(at)
    if spec.cadence == "weekly":
        return week_window(at)
    assert spec.sprint is not None  # the model guarantees a sprint block for this cadence
    return sprint_window(at, anchor=spec.sprint.anchor, length_days=spec.sprint.length_days)


def interval_bounds(
    *, anchor: datetime, interval: timedelta, at: datetime
) -> tuple[datetime, datetime]:
    """Start and end of the reset interval holding `at`, counted from `anchor`."""
    start = anchor + (at - anchor) // interval * interval
    return start, start + interval


def windows_between(spec: WindowSpec, *, last: Window, now: datetime) -> list[Window]:
    """Windows that began after `last` up to and including the one holding `now`.

    Empty when `now` is still in `last`; two entries when the operator missed a whole window.
    """
    missed = []
    current = last
    while not current.contains(now) and current.end <= now:
        current = window_at(spec, current.end)
        missed.append(current)
    return missed
