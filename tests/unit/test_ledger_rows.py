"""The embedded ledger stores a status as rows: a write holds what its batch touched, and a
ledger written before rows reads and converts without losing a cent or a key."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from budgetops.apis.ledger import KEY_KEPT, KEYS_FORGOTTEN_EVERY, Entry, ReleaseMark
from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.engine.ledger import InvalidCharge, confirm
from budgetops.store.rows import Rows
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging

from .test_decisions import NOW, trust_budget

KEY = BudgetKey("TrustBudget", "certs")


def opened(budget: TrustBudget) -> tuple[TrustBudget, Rows]:
    """`budget` as a store hands it to a change once stored: every row written, its maps
    tracked since."""
    rows = Rows()
    rows.track(budget.status)
    budget.status.accounts.values()  # touches every account: all are written
    rows.wrote(rows.changes(budget), budget.status)
    return budget, rows


def with_accounts(count: int) -> TrustBudget:
    budget = trust_budget()
    for n in range(count):
        charging(f"uid-{n}", account=f"user:u{n}", now=NOW)(budget)
    return budget


def put(rows: Rows, budget: TrustBudget) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, entry, _ in rows.changes(budget).put:
        found.setdefault(name, set()).add(entry)
    return found


def test_a_charge_writes_the_row_of_its_account_and_nothing_of_the_others() -> None:
    budget, rows = opened(with_accounts(200))
    charging("uid-new", account="user:u7", now=NOW)(budget)
    assert put(rows, budget) == {"accounts": {"user:u7"}}
    assert rows.changes(budget).drop == []


def test_a_pass_that_reads_every_account_writes_only_those_that_changed() -> None:
    budget, rows = opened(with_accounts(50))
    for name, account in budget.status.accounts.items():  # reads all, as a reconcile pass
        if name == "user:u3":
            confirm(budget.status, key="uid-3", now=NOW)
            assert account.spent == 1
    assert put(rows, budget) == {"accounts": {"user:u3"}, "settled": {"uid-3"}}


def test_forgetting_settled_keys_drops_just_those_rows() -> None:
    budget, rows = opened(with_accounts(20))
    for n in range(20):
        confirm(budget.status, key=f"uid-{n}", now=NOW + timedelta(seconds=2 * n))
    rows.wrote(rows.changes(budget), budget.status)  # the keys are stored
    later = NOW + KEY_KEPT + KEYS_FORGOTTEN_EVERY + timedelta(seconds=1)  # 31 s past the first
    budget.status.forget_settled(later)
    changes = rows.changes(budget)
    assert sorted(changes.drop) == sorted(("settled", f"uid-{n}") for n in range(16))
    assert changes.put == []


def test_a_row_that_would_not_read_back_names_the_budget_and_nothing_is_written() -> None:
    budget, rows = opened(with_accounts(3))
    budget.status.releases["r" * 300] = ReleaseMark(of="x", at=NOW)  # longer than a key may be
    with pytest.raises(InvalidCharge, match="TrustBudget/certs"):
        rows.check(KEY, budget)


def write_old_layout(path: Path, budget: TrustBudget) -> None:
    """Store `budget`'s whole status in its row, as every BudgetOps before rows did."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "UPDATE budgets SET status = ?, version = version + 1 WHERE name = 'certs'",
            (budget.status.model_dump_json(by_alias=True, exclude_none=True),),
        )
        db.execute("DELETE FROM status_rows")


def test_a_ledger_written_before_rows_reads_whole_and_converts_on_its_next_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    store.apply(trust_budget())
    for n in range(30):
        store.update_status(KEY, charging(f"uid-{n}", account=f"user:u{n % 7}", now=NOW))
    for n in range(10):
        store.update_status(KEY, lambda b, n=n: confirm(b.status, key=f"uid-{n}", now=NOW))
    before = store.get(KEY)
    store.close()
    write_old_layout(path, before)

    store = SQLiteStore(path)
    assert store.get(KEY) == before  # read as it is, nothing lost
    replay = store.update_status(KEY, charging("uid-3", account="user:u3", now=NOW))
    assert replay.reason == "AlreadyCharged"  # a settled key of the old layout still counts
    store.update_status(KEY, charging("uid-new", account="user:u1", now=NOW))
    after = store.get(KEY)
    assert after.status.accounts["user:u1"].balance == before.status.accounts["user:u1"].balance - 1
    for name in before.status.accounts.keys() - {"user:u1"}:
        assert after.status.accounts[name] == before.status.accounts[name]
    assert after.status.settled.keys() == before.status.settled.keys()
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        (status,) = db.execute("SELECT status FROM budgets").fetchone()
        (accounts,) = db.execute(
            "SELECT count(*) FROM status_rows WHERE map = 'accounts'"
        ).fetchone()
    assert '"accounts"' not in status  # moved out, in that one write
    assert accounts == 7


def test_every_account_reads_back_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path, group_commit=True)
    store.apply(trust_budget())
    for n in range(40):
        store.update_status(
            KEY, charging(f"uid-{n}", account=f"user:u{n % 9}", now=NOW, cost=Decimal(n % 3))
        )
    written = store.get(KEY)
    store.close()
    assert SQLiteStore(path, mode="ro").get(KEY) == written
    assert sum(a.reserved for a in written.status.accounts.values()) == sum(
        n % 3 for n in range(40)
    )


def test_one_account_reads_without_the_others(tmp_path: Path) -> None:
    """Asking for one account reads its row alone: a budget of any size answers in the
    same time, and (shown here) another account's row does not even have to read."""
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    store.apply(trust_budget())
    for n in range(5):
        store.update_status(KEY, charging(f"uid-{n}", account=f"user:u{n}", now=NOW))
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE status_rows SET row = '{\"user:u4\": 7}' WHERE key = 'user:u4'")
    store = SQLiteStore(path, mode="ro")
    assert store.unreadable() != {}  # the whole budget no longer reads...
    one = store.get(KEY, account="user:u2")  # ...one other account still does
    assert list(one.status.accounts) == ["user:u2"]
    assert one.status.accounts["user:u2"].reserved == 1


def test_a_new_entry_that_would_not_read_back_is_caught() -> None:
    budget, rows = opened(with_accounts(3))
    charging("uid-x", account="user:u1", now=NOW)(budget)
    rows.check(KEY, budget)  # one new entry, as the engine wrote it: reads back
    budget.status.entries.append(
        Entry(at=NOW, account="user:u1", action="reserve", amount=Decimal(1), verdict="v" * 72)
    )
    with pytest.raises(InvalidCharge, match="TrustBudget/certs"):
        rows.check(KEY, budget)


def test_a_batch_that_changed_nothing_leaves_the_next_write_to_its_own_rows() -> None:
    """A reconcile pass reads every account and, with nothing to do, writes nothing; the
    charge after it must not re-encode every account (it did, at 100,000 accounts: 20 ms
    per charge instead of 1)."""
    budget, rows = opened(with_accounts(50))
    budget.status.accounts.values()  # a pass that looked at everything and changed nothing
    assert rows.unchanged(budget)
    accounts = rows.maps["accounts"]
    assert (accounts.everything, accounts.touched) == (False, set())  # nothing left to look at
    charging("uid-next", account="user:u9", now=NOW)(budget)
    assert accounts.touched == {"user:u9"}
    assert put(rows, budget) == {"accounts": {"user:u9"}}
