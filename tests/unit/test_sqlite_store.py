"""The embedded store: specs kept, statuses changed atomically from threads and processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import audit
from budgetops.store import NotFound
from budgetops.store.errors import LedgerError
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging
from tests.waiting import eventually

from .test_admission import admitting, request
from .test_decisions import trust_budget

KEY = BudgetKey("TrustBudget", "certs")
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def charge(store: SQLiteStore, uid: str) -> Decision:
    return store.update_status(KEY, charging(uid, now=NOW))


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget(initialBalance=100))
    return store


def test_apply_keeps_status_and_bumps_generation_on_spec_change(store: SQLiteStore) -> None:
    charge(store, "uid-1")
    assert store.apply(trust_budget(initialBalance=100)).metadata.generation == 1
    stored = store.apply(trust_budget(initialBalance=200))
    assert stored.metadata.generation == 2
    assert isinstance(stored, TrustBudget)
    assert stored.status.accounts["user:alice"].reserved == 1


def test_get_list_delete(store: SQLiteStore) -> None:
    assert [BudgetKey.of(b) for b in store.list()] == [KEY]
    assert store.list("RiskBudget") == []
    assert store.delete(KEY)
    assert not store.delete(KEY)
    with pytest.raises(NotFound):
        store.get(KEY)


def test_a_failed_change_writes_nothing(store: SQLiteStore) -> None:
    charge(store, "uid-1")

    def broken(budget: Budget) -> None:
        assert isinstance(budget, TrustBudget)
        budget.status.accounts["user:alice"].balance = Decimal(0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.update_status(KEY, broken)
    after = store.get(KEY)
    assert isinstance(after, TrustBudget)
    assert after.status.accounts["user:alice"].balance == 99
    assert charge(store, "uid-2").allowed, "the kept copy was dropped, not reused half-changed"


@pytest.mark.parametrize("group_commit", [False, True])
def test_many_threads_on_one_hot_budget_admit_exactly_the_balance(
    tmp_path: Path, group_commit: bool
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3", group_commit=group_commit)
    store.apply(trust_budget(initialBalance=100))
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda i: charge(store, f"uid-{i % 150}"), range(300)))
    charged = [d for d in decisions if d.reason == "Charged"]
    assert len(charged) == 100
    final = store.get(KEY)
    assert isinstance(final, TrustBudget)
    assert final.status.accounts["user:alice"].balance == 0
    assert audit(final.status) == []
    if group_commit:
        stats = store.commits.stats
        assert stats.charges == 300, "every change was persisted once (default needs_write)"


def _charge_from_process(path: str, start: int, count: int) -> int:
    store = SQLiteStore(path)
    return sum(charge(store, f"p{start + i}").reason == "Charged" for i in range(count))


def test_several_processes_never_overspend(store: SQLiteStore) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        admitted = pool.starmap(
            _charge_from_process, [(str(store.path), n * 60, 60) for n in range(3)]
        )
    assert sum(admitted) == 100
    final = store.get(KEY)
    assert isinstance(final, TrustBudget)
    assert audit(final.status) == []
    assert final.status.accounts["user:alice"].reserved == 100


def charges_on_disk(path: Path, copy: Path) -> int:
    """Charges in the database file alone, as if its WAL were lost: what checkpoints moved."""
    shutil.copyfile(path, copy)
    try:
        budget = SQLiteStore(copy, mode="ro").get(KEY)
    except (LedgerError, NotFound):  # not even the budget has reached the file
        return 0
    account = budget.status.accounts.get("user:alice")
    return 0 if account is None else len(account.reservations)


@pytest.mark.parametrize("every", [None, 0.05])
def test_a_serving_store_checkpoints_in_the_background(tmp_path: Path, every: float | None) -> None:
    """With `checkpoint_every`, the WAL reaches the database file without any commit doing
    it; without, a few writes stay in the WAL until SQLite's own threshold."""
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path, checkpoint_every=every)
    store.apply(trust_budget())
    for n in range(20):
        store.update_status(KEY, charging(f"uid-{n}", now=NOW))
    copy = tmp_path / "copy.sqlite3"
    if every is None:
        time.sleep(0.3)
        assert charges_on_disk(path, copy) == 0
    else:
        eventually(lambda: charges_on_disk(path, copy) == 20, within=5)
    assert charge(store, "uid-0").reason == "AlreadyCharged", "nothing lost either way"


def break_status(path: Path, name: str, status: dict[str, object]) -> None:
    """Write a status BudgetOps cannot read, as a hand edit (or an old bug) leaves it."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "UPDATE budgets SET status = ?, version = version + 1 WHERE name = ?",
            (json.dumps(status), name),
        )


def test_a_budget_that_does_not_read_stops_no_other(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, one unreadable row made every list raise: every embedded admission was a 500
    and /readyz failed. Now it is left out as KubeStore leaves it out, with its reason."""
    widgets = trust_budget(match=[{"group": "example.com", "resource": "widgets"}])
    widgets.metadata.name = "broken"
    broken = BudgetKey.of(store.apply(widgets))
    break_status(store.path, broken.name, {"accounts": {"user:hot": {"balance": "lots"}}})
    with caplog.at_level("ERROR", logger="budgetops.sqlite"):
        assert [BudgetKey.of(b) for b in store.list()] == [KEY]
        assert [BudgetKey.of(b) for b in store.list("TrustBudget")] == [KEY]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1, "logged once for this version of the row"
    assert errors[0].startswith(f"{broken} does not read (status.accounts.user:hot."), errors
    assert errors[0].endswith("what it governs is refused until it is fixed")
    reasons = store.unreadable()
    assert list(reasons) == [broken]
    assert reasons[broken].startswith("status.accounts.user:hot."), reasons
    assert store.ready()
    with pytest.raises(LedgerError, match="does not read back"):
        store.get(broken)
    answer = asyncio.run(admitting(store).review(json.dumps(request(uid="fine")).encode()))
    assert answer.status == 200, answer.body
    assert answer.body["response"]["allowed"]
    break_status(store.path, broken.name, {})  # repaired by hand
    assert [BudgetKey.of(b) for b in store.list()] == [broken, KEY]
    assert store.unreadable() == {}


def test_a_request_a_budget_that_does_not_read_governs_is_denied_calmly(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, it was a 500 with a traceback for every such request; the budgets charged
    before it keep nothing."""
    team = trust_budget(subjects={"groups": ["developers"]})
    team.metadata.name = "unreadable"  # charged after "certs": its reservation is taken back
    broken = BudgetKey.of(store.apply(team))
    break_status(store.path, broken.name, {"accounts": {"user:hot": {"balance": "lots"}}})
    with caplog.at_level("ERROR"):
        answer = asyncio.run(admitting(store).review(json.dumps(request(uid="u1")).encode()))
    assert answer.status == 200, answer.body
    denied = answer.body["response"]
    assert not denied["allowed"]
    assert denied["status"]["message"].startswith(
        f"BudgetOps cannot charge this request to {broken}: the budget does not read back"
    )
    assert "Traceback" not in caplog.text
    budget = store.get(KEY)
    assert isinstance(budget, TrustBudget)
    assert budget.status.accounts["user:alice"].reserved == 0, "taken back"
