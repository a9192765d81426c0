"""Leases in the ledger: grants, reports counted once in any order, closing, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetops.apis.ledger import COSTS_KEPT, REPORTS_AHEAD_MAX, UNNUMBERED_MAX, Ledger
from budgetops.engine import leases, ledger
from budgetops.engine.leases import Usage

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
AGENT = "agent_abc123"
HOUR = timedelta(hours=1)


def budget(allocation: str = "100") -> Ledger:
    status = Ledger()
    ledger.open_account(
        status, key=AGENT, allocation=Decimal(allocation), window_start=T0, resets_at=None
    )
    return status


def granted(status: Ledger, amount: str = "10", lease_id: str = "lease_1") -> Decimal:
    return leases.grant(
        status, account=AGENT, lease_id=lease_id, requested=Decimal(amount), now=T0, ttl=HOUR
    )


def spend(status: Ledger, *usages: Usage, lease_id: str = "lease_1") -> leases.Counted:
    return leases.report(status, account=AGENT, lease_id=lease_id, usages=usages, now=T0)


def test_a_grant_moves_the_balance_to_leased_out_and_is_granted_once() -> None:
    status = budget()
    assert granted(status) == 10
    assert granted(status) == 10
    account = status.accounts[AGENT]
    assert (account.balance, account.leased_out) == (90, 10)
    assert ledger.audit(status) == []


def test_a_grant_is_what_is_left_and_nothing_when_nothing_is() -> None:
    status = budget("4")
    assert granted(status) == 4
    assert granted(status, lease_id="lease_2") == 0
    assert "lease_2" not in status.accounts[AGENT].leases


def test_reports_move_the_lease_to_spent_once_and_no_further_than_it_lends() -> None:
    status = budget()
    granted(status)
    first = spend(status, Usage("r1", 1, Decimal("4")), Usage("r2", 2, Decimal("4")))
    assert (first.accepted, first.spent) == (2, 8)
    again = spend(status, Usage("r2", 2, Decimal("4")), Usage("r3", 3, Decimal("4")))
    assert (again.accepted, again.duplicates, again.spent, again.uncovered) == (1, 1, 2, 2)
    account = status.accounts[AGENT]
    assert (account.spent, account.leased_out, account.balance) == (10, 0, 90)
    assert ledger.audit(status) == []


def test_unnumbered_reports_are_recognised_by_their_request_id_for_the_life_of_the_lease() -> None:
    """Once only the latest 64 ids were kept: a replay after 70 others was counted again."""
    status = budget()
    granted(status)
    spend(status, Usage("req-a", None, Decimal("0.01")))
    for n in range(UNNUMBERED_MAX - 1):
        spend(status, Usage(f"req-{n}", None, Decimal(0)))
    assert spend(status, Usage("req-a", None, Decimal("0.01"))).duplicates == 1
    assert status.accounts[AGENT].spent == Decimal("0.01")
    with pytest.raises(leases.TooManyUnnumbered, match="number the reports"):
        spend(status, Usage("req-new", None, Decimal("0.01")))
    assert spend(status, Usage("req-7", None, Decimal(0))).duplicates == 1
    assert spend(status, Usage("r1", 1, Decimal("0.01"))).accepted == 1
    assert status.accounts[AGENT].spent == Decimal("0.02")


def test_unnumbered_reports_counted_by_an_older_status_are_still_recognised() -> None:
    status = budget()
    granted(status)
    status.accounts[AGENT].leases["lease_1"].recent_requests = ["old"]
    assert spend(status, Usage("old", None, Decimal(1))).duplicates == 1
    assert spend(status, Usage("new", None, Decimal(1))).accepted == 1
    assert status.accounts[AGENT].leases["lease_1"].unnumbered() == ["old", "new"]


def test_a_record_reported_again_with_another_cost_is_a_conflict_and_counts_nothing() -> None:
    status = budget()
    granted(status)
    spend(status, Usage("r1", 1, Decimal("0.50")), Usage("u", None, Decimal("0.20")))
    assert spend(status, Usage("r1", 1, Decimal("0.5"))).duplicates == 1
    for replay in (Usage("r1", 1, Decimal("0.40")), Usage("u", None, Decimal("0.30"))):
        with pytest.raises(leases.Conflict, match=r"counted with a cost of 0.[25]0? USD, not"):
            spend(status, Usage("r2", 2, Decimal("1")), replay)
    with pytest.raises(leases.Conflict):
        spend(status, Usage("r3", 3, Decimal("1")), Usage("r3", 3, Decimal("2")))
    hold = status.accounts[AGENT].leases["lease_1"]
    assert (hold.spent, hold.reported_through) == (Decimal("0.70"), 1)


def test_the_costs_kept_for_conflicts_stay_bounded() -> None:
    status = budget("1000")
    granted(status, "1000")
    total = 3 * COSTS_KEPT + 10
    for start in range(1, total + 1, 100):
        end = min(start + 100, total + 1)
        spend(status, *(Usage(f"r{n}", n, Decimal(0)) for n in range(start, end)))
    hold = status.accounts[AGENT].leases["lease_1"]
    assert hold.reported_through == total
    assert len(hold.costs) == COSTS_KEPT
    with pytest.raises(leases.Conflict):
        spend(status, Usage("r", total - COSTS_KEPT + 1, Decimal(1)))


def test_a_report_too_far_ahead_changes_nothing() -> None:
    status = budget()
    granted(status)
    with pytest.raises(leases.OutOfOrder, match="send the earlier ones first"):
        spend(status, Usage("a", 1, Decimal(1)), Usage("b", REPORTS_AHEAD_MAX + 2, Decimal(1)))
    hold = status.accounts[AGENT].leases["lease_1"]
    assert (hold.reported_through, hold.counted_above, hold.spent) == (0, [], 0)


def test_a_closed_lease_counts_late_reports_of_calls_made_before_the_close_only() -> None:
    status = budget()
    granted(status)
    spend(status, Usage("r1", 1, Decimal("3")))
    later = T0 + timedelta(minutes=5)
    returned = leases.close(status, account=AGENT, lease_id="lease_1", now=later, state="released")
    assert returned == 7
    assert leases.close(status, account=AGENT, lease_id="lease_1", now=later, state="released") == 0
    close = int(later.timestamp())
    for stamped in (close + 1, None):
        with pytest.raises(leases.LeaseClosed, match="only calls made before the close"):
            spend(status, Usage("r2", 2, Decimal("2"), close), Usage("r3", 3, Decimal(1), stamped))
    late = spend(status, Usage("r2", 2, Decimal("2"), close), Usage("r1", 1, Decimal("3")))
    assert (late.accepted, late.spent, late.late) == (1, 2, 2)
    hold = status.accounts[AGENT].leases["lease_1"]
    assert (hold.spent, hold.late_spent) == (5, 2)
    assert status.entries[-1].key == "lease_1:late"
    account = status.accounts[AGENT]
    assert (account.spent, account.balance, account.leased_out) == (5, 95, 0)
    assert ledger.audit(status) == []


def test_only_open_leases_limit_new_ones_and_closed_ones_are_remembered_boundedly() -> None:
    """Closed leases once counted against the cap for their ttl: a runtime refreshing often
    was refused with money left."""
    status = budget("10000")
    for n in range(leases.LEASES_KEPT):
        granted(status, "1", lease_id=f"lease_{n}")
    with pytest.raises(leases.TooManyLeases, match="open leases"):
        granted(status, "1", lease_id="lease_x")
    for n in range(leases.LEASES_KEPT):
        leases.close(status, account=AGENT, lease_id=f"lease_{n}", now=T0, state="released")
    assert granted(status, "1", lease_id="lease_x") == 1
    later = T0 + timedelta(seconds=1)
    leases.close(status, account=AGENT, lease_id="lease_x", now=later, state="released")
    held = status.accounts[AGENT].leases
    assert len(held) == leases.CLOSED_KEPT
    assert "lease_x" in held
    assert ledger.audit(status) == []


def test_expiry_returns_open_leases_and_forgets_closed_ones_a_ttl_later() -> None:
    status = budget()
    granted(status)
    assert leases.next_due(status) == T0 + HOUR
    assert leases.expire(status, now=T0 + HOUR) == [(AGENT, "lease_1", Decimal(10))]
    assert status.accounts[AGENT].leases["lease_1"].state == "expired"
    assert leases.next_due(status) == T0 + 2 * HOUR
    leases.expire(status, now=T0 + 2 * HOUR)
    assert status.accounts[AGENT].leases == {}
    with pytest.raises(leases.UnknownLease):
        spend(status, Usage("r1", 1, Decimal(1)))
    assert leases.next_due(status) is None


def test_closing_an_agent_closes_all_its_open_leases_in_one_change() -> None:
    status = budget()
    for n in range(5):
        granted(status, "5", lease_id=f"lease_{n}")
    assert leases.close_agent(status, account=AGENT, now=T0, state="revoked") == 5
    account = status.accounts[AGENT]
    assert (account.balance, account.leased_out) == (100, 0)
    assert {h.state for h in account.leases.values()} == {"revoked"}


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=120),
    st.integers(1, 7),
)
def test_reports_replayed_in_any_order_and_batching_are_counted_once(
    order: list[int], batch: int
) -> None:
    """Each report costs its number in cents; whatever arrives, however often, each number
    is counted once, and the idempotency state is a mark plus what is counted above it."""
    status = budget("1000")
    granted(status, "1000")
    usages = [Usage(f"r{n}", n, Decimal(n) / 100) for n in order]
    for start in range(0, len(usages), batch):
        spend(status, *usages[start : start + batch])
    hold = status.accounts[AGENT].leases["lease_1"]
    assert hold.spent == sum(Decimal(n) / 100 for n in set(order))
    counted = set(range(1, hold.reported_through + 1)) | set(hold.counted_above)
    assert counted == set(order)
    assert len(hold.counted_above) <= len(set(order))
    assert ledger.audit(status) == []
