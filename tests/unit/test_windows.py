"""Window arithmetic across month ends, leap years, ISO weeks, sprint anchors and intervals."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetops.apis.riskbudget import Sprint
from budgetops.apis.riskbudget import Window as WindowSpec
from budgetops.engine.windows import (
    interval_bounds,
    month_window,
    sprint_window,
    week_window,
    window_at,
    windows_between,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("instant", "key", "start", "end"),
    [
        (utc(2026, 1, 31, 23, 59, 59), "2026-01", utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 1), "2026-02", utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2028, 2, 29, 12), "2028-02", utc(2028, 2, 1), utc(2028, 3, 1)),
        (utc(2026, 12, 31, 23, 59), "2026-12", utc(2026, 12, 1), utc(2027, 1, 1)),
        (utc(2027, 1, 1), "2027-01", utc(2027, 1, 1), utc(2027, 2, 1)),
    ],
)
def test_month_windows(instant: datetime, key: str, start: datetime, end: datetime) -> None:
    window = month_window(instant)
    assert (window.key, window.start, window.end) == (key, start, end)


def test_month_window_is_utc_whatever_the_input_zone() -> None:
    # 00:30 on Feb 1st in UTC+1 is still January in UTC.
    instant = datetime(2026, 2, 1, 0, 30, tzinfo=UTC) - timedelta(hours=1)
    assert month_window(instant.astimezone()).key == "2026-01"


@pytest.mark.parametrize(
    ("instant", "key", "start"),
    [
        (utc(2026, 11, 23, 10), "2026-W48", utc(2026, 11, 23)),  # a Monday
        (utc(2026, 11, 29, 23, 59), "2026-W48", utc(2026, 11, 23)),  # the Sunday after
        (utc(2027, 1, 1), "2026-W53", utc(2026, 12, 28)),  # ISO year differs from calendar
        (utc(2024, 12, 31), "2025-W01", utc(2024, 12, 30)),
    ],
)
def test_week_windows(instant: datetime, key: str, start: datetime) -> None:
    window = week_window(instant)
    assert (window.key, window.start, window.end) == (key, start, start + timedelta(days=7))


@pytest.mark.parametrize(
    ("instant", "start"),
    [
        (utc(2026, 1, 5), utc(2026, 1, 5)),  # the anchor itself
        (utc(2026, 1, 18, 23, 59), utc(2026, 1, 5)),  # last minute of the first sprint
        (utc(2026, 1, 19), utc(2026, 1, 19)),
        (utc(2026, 1, 4, 23), utc(2025, 12, 22)),  # before the anchor: sprints tile backwards
        (utc(2028, 3, 1), utc(2028, 2, 28)),  # across a leap day
    ],
)
def test_sprint_windows(instant: datetime, start: datetime) -> None:
    window = sprint_window(instant, anchor=date(2026, 1, 5), length_days=14)
    assert window.start == start
    assert window.end == start + timedelta(days=14)
    assert window.key == f"sprint-{start.date().isoformat()}"


def test_interval_windows_count_from_their_anchor() -> None:
    anchor = utc(1970, 1, 1)
    day = interval_bounds(anchor=anchor, interval=timedelta(hours=24), at=utc(2026, 1, 1, 15))
    assert day == (utc(2026, 1, 1), utc(2026, 1, 2))
    six = interval_bounds(anchor=anchor, interval=timedelta(hours=6), at=utc(2026, 1, 1, 15))
    assert six == (utc(2026, 1, 1, 12), utc(2026, 1, 1, 18))
    boundary = interval_bounds(anchor=anchor, interval=timedelta(hours=6), at=utc(2026, 1, 1, 18))
    assert boundary == (utc(2026, 1, 1, 18), utc(2026, 1, 2)), "the boundary opens the next one"


def test_windows_between_catches_up_two_missed_months_once() -> None:
    spec = WindowSpec(cadence="monthly")
    last = month_window(utc(2026, 1, 15))
    missed = windows_between(spec, last=last, now=utc(2026, 3, 2))
    assert [w.key for w in missed] == ["2026-02", "2026-03"]
    assert windows_between(spec, last=missed[-1], now=utc(2026, 3, 2)) == []


specs = st.one_of(
    st.just(WindowSpec(cadence="monthly")),
    st.just(WindowSpec(cadence="weekly")),
    st.builds(
        lambda days, anchor: WindowSpec(
            cadence="sprint", sprint=Sprint(length_days=days, anchor=anchor)
        ),
        st.integers(min_value=1, max_value=30),
        st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    ),
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(spec=specs, instant=instants)
def test_every_instant_falls_in_exactly_one_window(spec: WindowSpec, instant: datetime) -> None:
    window = window_at(spec, instant)
    assert window.contains(instant)
    assert window.start.time() == datetime.min.time()  # boundaries are 00:00 UTC
    following = window_at(spec, window.end)
    assert following.start == window.end, "windows tile time without gaps or overlaps"
    assert following.key != window.key
    previous = window_at(spec, window.start - timedelta(microseconds=1))
    assert previous.end == window.start


@given(spec=specs, start=instants, gap=st.integers(min_value=0, max_value=2000))
def test_catch_up_visits_each_window_once(spec: WindowSpec, start: datetime, gap: int) -> None:
    last = window_at(spec, start)
    now = start + timedelta(days=gap)
    missed = windows_between(spec, last=last, now=now)
    chain = [last, *missed]
    assert all(a.end == b.start for a, b in itertools.pairwise(chain))
    assert chain[-1].contains(now)
