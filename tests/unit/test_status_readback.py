"""No store writes a status that does not read back, and one change that would fails alone.

The changes that spoil the status here bypass the engine's own checks on purpose: they stand
for whatever the engine may let through next (the lease report of `0.010` did). Each store is
driven through its real group commit: SQLite on a file, KubeStore with the API server's part
replaced by a round trip through the wire form, as the API server stores a status.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetops.apis.ledger import KEY_MAX, Entry
from budgetops.apis.resources import RESOURCES, Budget, BudgetKey, TrustBudget
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import InvalidCharge, audit
from budgetops.store.commit import GroupCommit, Held, Waiter, check_readback, stored_size
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging
from tests.memstore import MemStore

from .test_decisions import NOW, trust_budget
from .test_group_commit import KEY, ScriptedStore


def waiter(change: Callable[[Budget], Any]) -> Waiter:
    """A waiter of five seconds; a spoiler (which answers True) writes, like a charge."""
    deadline = time.monotonic() + 5
    return Waiter(change, lambda r: r is True or r.changes_ledger, deadline, deadline)


class WireStore(ScriptedStore):
    """KubeStore's commit logic; a write keeps what the API server would hand back. Its PUT
    of `to_wire()` has no public seam, so the HTTP round trip is replaced privately."""

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        self.stored = RESOURCES[key.kind].model.model_validate(budget.to_wire())  # type: ignore[assignment]
        return True


def too_long_settled_key(budget: Budget) -> bool:
    """Settles a key longer than a status may hold (a part the check takes by difference)."""
    assert isinstance(budget, TrustBudget)
    budget.status.remember_settled("k" * (KEY_MAX + 1), NOW)
    return True


def amount_past_the_bound(budget: Budget) -> bool:
    """Moves more points than an amount may hold, keeping the account's invariant."""
    assert isinstance(budget, TrustBudget)
    account = budget.status.accounts["user:alice"]
    account.allocation += Decimal(10**16)
    account.spent += Decimal(10**16)
    return True


SPOILERS = [too_long_settled_key, amount_past_the_bound]


def batch(spoil: Callable[[Budget], bool]) -> list[Waiter]:
    """Three waiters, the middle one spoiling the status: the order a batch may hold."""
    return [
        waiter(charging("before", now=NOW)),
        waiter(spoil),
        waiter(charging("after", now=NOW)),
    ]


def assert_only_the_spoiler_failed(waiters: list[Waiter], stored: Budget) -> None:
    first, spoiler, last = waiters
    assert isinstance(first.result, Decision)
    assert first.result.reason == "Charged"
    assert isinstance(last.result, Decision)
    assert last.result.reason == "Charged"
    assert isinstance(spoiler.error, InvalidCharge)
    assert "does not read back" in str(spoiler.error)
    assert "nothing was written" in str(spoiler.error)
    assert isinstance(stored, TrustBudget)
    account = stored.status.accounts["user:alice"]
    assert account.reserved == 2
    assert account.allocation == 10
    assert set(stored.status.settled) == set(), "no key of the spoiler was stored"
    assert audit(stored.status) == []


@pytest.mark.parametrize("spoil", SPOILERS)
@pytest.mark.parametrize("whole", [False, True])
def test_sqlite_writes_the_batch_without_the_change_that_would_not_read_back(
    tmp_path: Path, spoil: Callable[[Budget], bool], whole: bool
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3", group_commit=True, check_writes=whole)
    store.apply(trust_budget(initialBalance=10))
    waiters = batch(spoil)
    store.commits.commit(KEY, waiters)
    reader = SQLiteStore(tmp_path / "ledger.sqlite3", mode="ro")
    assert_only_the_spoiler_failed(waiters, reader.get(KEY))
    assert [BudgetKey.of(b) for b in reader.list()] == [KEY]


@pytest.mark.parametrize("spoil", SPOILERS)
def test_kube_writes_the_batch_without_the_change_that_would_not_read_back(
    spoil: Callable[[Budget], bool],
) -> None:
    store = WireStore(trust_budget(initialBalance=10), conflicts=0)
    waiters = batch(spoil)
    store.commits.commit(KEY, waiters)
    assert_only_the_spoiler_failed(waiters, store.stored)
    assert store.snapshots == [False, False, False], "checked, found, written: three reads"


def test_a_change_alone_that_would_not_read_back_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget(initialBalance=10))
    store.update_status(KEY, charging("first", now=NOW))
    with pytest.raises(InvalidCharge, match="does not read back"):
        store.update_status(KEY, amount_past_the_bound)
    stored = store.get(KEY)
    assert isinstance(stored, TrustBudget)
    assert stored.status.accounts["user:alice"].allocation == 10


def test_what_the_snapshot_held_is_left_out_of_the_check_unless_whole() -> None:
    """What keeps the check cheap, and what `whole` (the command line's) adds back."""
    budget = trust_budget(initialBalance=10)
    too_long_settled_key(budget)
    budget.status.entries.append(
        Entry(at=NOW, account="a" * (KEY_MAX + 1), action="reserve", amount=Decimal(1))
    )
    check_readback(KEY, budget, held=Held.of(budget))
    with pytest.raises(InvalidCharge, match="settled"):
        check_readback(KEY, budget)


def test_a_reservation_or_entry_the_change_added_is_checked() -> None:
    budget = trust_budget(initialBalance=10)
    charging("held", now=NOW)(budget)
    held = Held.of(budget)
    charging("new", now=NOW)(budget)
    check_readback(KEY, budget, held=held)
    reservations = budget.status.accounts["user:alice"].reservations
    reservations["new"] = dataclasses.replace(reservations["new"], amount=Decimal(10**16))
    with pytest.raises(InvalidCharge, match="reservations"):
        check_readback(KEY, budget, held=held)
    del reservations["new"]
    budget.status.entries.append(
        dataclasses.replace(budget.status.entries[-1], amount=Decimal(10**16))
    )
    with pytest.raises(InvalidCharge, match="entries"):
        check_readback(KEY, budget, held=held)


def test_a_batch_that_reads_back_is_checked_once() -> None:
    checks: list[int] = []
    store = MemStore()
    store.apply(trust_budget(initialBalance=10))
    waiters = [waiter(charging(f"uid-{i}", now=NOW)) for i in range(5)]
    real = GroupCommit._apply

    def counting(self: GroupCommit, *args: Any, careful: bool) -> Any:
        checks.append(careful)
        return real(self, *args, careful=careful)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GroupCommit, "_apply", counting)
        store.commits.commit(KEY, waiters)
    assert checks == [False]
    assert all(w.result.reason == "Charged" for w in waiters)


def many_accounts(count: int, prefix: str = "user:new") -> Callable[[Budget], Decision]:
    """One change that opens `count` accounts (a charge each): a budget's biggest growth."""

    def open_them(budget: Budget) -> Decision:
        for n in range(count):
            decision = charging(f"{prefix}-{n}", account=f"{prefix}-{n}", now=NOW)(budget)
        return decision

    return open_them


def test_kube_writes_the_batch_without_the_change_that_would_not_fit_in_one_object() -> None:
    """etcd refuses an object past its request limit: the whole batch failed, and every
    batch after it, while the one change that made it too big is what should fail."""
    store = WireStore(trust_budget(initialBalance=10), conflicts=0)
    store.commits.commit(KEY, [waiter(charging("first", now=NOW))])
    size = stored_size(store.stored)
    store.commits.limit = size + 2_000  # room for a charge or two, not for 50 accounts
    waiters = [
        waiter(charging("before", now=NOW)),
        waiter(many_accounts(50)),
        waiter(charging("after", now=NOW)),
    ]
    store.commits.commit(KEY, waiters)
    first, full, last = waiters
    assert first.result.reason == last.result.reason == "Charged"
    assert isinstance(full.error, InvalidCharge)
    assert f"{KEY} is full: this change would make it" in str(full.error)
    assert "bytes (51 accounts and the keys of 0 requests" in str(full.error)
    assert f"one object holds {size + 2_000:,}; nothing was charged" in str(full.error)
    assert "nothing was charged" in str(full.error)
    stored = store.stored
    assert isinstance(stored, TrustBudget)
    assert set(stored.status.accounts) == {"user:alice"}
    assert stored.status.accounts["user:alice"].reserved == 3
    assert stored_size(stored) <= size + 2_000


def test_a_budget_already_past_the_limit_may_shrink_but_not_grow() -> None:
    """A limit lowered below a stored budget (an upgrade, a smaller etcd) must not freeze
    it: what makes it smaller still passes."""
    store = WireStore(trust_budget(initialBalance=10), conflicts=0)
    store.commits.commit(KEY, [waiter(many_accounts(20, prefix="user:old"))])
    store.commits.limit = stored_size(store.stored) - 1_000

    def forget_old_entries(budget: Budget) -> bool:  # as the engine does past ENTRIES_KEPT
        assert isinstance(budget, TrustBudget)
        del budget.status.entries[:10]
        return True

    shrink, grow = waiter(forget_old_entries), waiter(charging("more", now=NOW))
    store.commits.commit(KEY, [shrink])
    store.commits.commit(KEY, [grow])
    assert shrink.result is True
    assert isinstance(grow.error, InvalidCharge)
    assert "is full" in str(grow.error)
