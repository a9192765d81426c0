"""What every BudgetStore promises, checked against the in-memory fake and SQLiteStore alike:
a test written against MemStore holds for the ledger too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.decisions import Decision
from budgetops.store import BudgetStore, NotFound
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging
from tests.memstore import MemStore

from .test_decisions import risk_budget, trust_budget

KEY = BudgetKey("TrustBudget", "certs")
RISK = BudgetKey("RiskBudget", "payments-api", "payments")
MISSING = BudgetKey("TrustBudget", "nowhere")
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "memory-grouped", "sqlite-grouped"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BudgetStore]:
    grouped = request.param.endswith("-grouped")
    made: BudgetStore
    if request.param.startswith("memory"):
        made = MemStore(group_commit=grouped)
    else:
        made = SQLiteStore(tmp_path / "ledger.sqlite3", group_commit=grouped)
    made.apply(risk_budget())
    made.apply(trust_budget(initialBalance=100))
    yield made
    if isinstance(made, SQLiteStore):
        made.close()


def charge(store: BudgetStore, uid: str) -> Decision:
    return store.update_status(KEY, charging(uid, now=NOW))


def reserved(store: BudgetStore) -> Decimal | int:
    budget = store.get(KEY)
    assert isinstance(budget, TrustBudget)
    account = budget.status.accounts.get("user:alice")
    return 0 if account is None else account.reserved


def test_get_returns_what_was_applied_and_never_a_shared_object(store: BudgetStore) -> None:
    got = store.get(KEY)
    assert isinstance(got, TrustBudget)
    assert (got.metadata.name, got.metadata.generation, got.spec) == (
        "certs",
        1,
        trust_budget(initialBalance=100).spec,
    )
    got.metadata.labels["changed"] = "by the caller"
    assert "changed" not in store.get(KEY).metadata.labels


def test_list_is_sorted_by_key_filters_by_kind_and_may_leave_out_status(
    store: BudgetStore,
) -> None:
    charge(store, "uid-1")
    assert [BudgetKey.of(b) for b in store.list()] == sorted([KEY, RISK])
    assert [BudgetKey.of(b) for b in store.list("RiskBudget")] == [RISK]
    assert store.list("BudgetLease") == []
    (full,) = store.list("TrustBudget")
    assert isinstance(full, TrustBudget)
    assert full.status.accounts["user:alice"].reserved == 1
    (spec_only,) = store.list("TrustBudget", with_status=False)
    assert spec_only.spec == full.spec
    assert (store.unreadable(), store.ready()) == ({}, True)


def test_apply_keeps_the_status_and_bumps_the_generation_only_on_a_spec_change(
    store: BudgetStore,
) -> None:
    charge(store, "uid-1")
    assert store.apply(trust_budget(initialBalance=100)).metadata.generation == 1
    stored = store.apply(trust_budget(initialBalance=200))
    assert stored.metadata.generation == 2
    assert reserved(store) == 1


def test_a_missing_budget_is_not_found_everywhere(store: BudgetStore) -> None:
    with pytest.raises(NotFound):
        store.get(MISSING)
    with pytest.raises(NotFound):
        store.update_status(MISSING, charging("uid-1", now=NOW))
    assert not store.delete(MISSING)
    assert store.delete(KEY)
    with pytest.raises(NotFound):
        store.get(KEY)
    assert [BudgetKey.of(b) for b in store.list()] == [RISK]


def test_a_change_that_raises_or_needs_no_write_leaves_nothing_stored(
    store: BudgetStore,
) -> None:
    def half_then_fail(budget: Budget) -> None:
        charging("uid-1", now=NOW)(budget)
        raise RuntimeError("the change broke halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        store.update_status(KEY, half_then_fail)
    assert reserved(store) == 0

    def observe(budget: Budget) -> str:
        budget.status.observed_generation = 7
        return "looked"

    assert store.update_status(KEY, observe, needs_write=lambda _: False) == "looked"
    assert store.get(KEY).status.observed_generation is None
    assert store.update_status(KEY, observe) == "looked"
    assert store.get(KEY).status.observed_generation == 7


def test_concurrent_charges_are_each_counted_once(store: BudgetStore) -> None:
    uids = [f"uid-{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda uid: charge(store, uid), uids))
    assert all(d.allowed for d in decisions)
    assert reserved(store) == 40
    assert not charge(store, "uid-7").changes_ledger, "a replay is not charged twice"
    assert reserved(store) == 40


def test_update_status_async_changes_what_get_reads(store: BudgetStore) -> None:
    change: Callable[[Budget], Decision] = charging("uid-1", now=NOW)
    decision = asyncio.run(store.update_status_async(KEY, change))
    assert decision.allowed
    assert reserved(store) == 1


def test_get_with_an_account_answers_that_account_alone(store: BudgetStore) -> None:
    for n, account in enumerate(["user:alice", "user:bob", "user:carol", "user:bob"]):
        store.update_status(KEY, charging(f"uid-{n}", account=account, now=NOW))
    whole = store.get(KEY)
    bob = store.get(KEY, account="user:bob")
    nobody = store.get(KEY, account="user:nobody")
    assert isinstance(whole, TrustBudget)
    assert isinstance(bob, TrustBudget)
    assert isinstance(nobody, TrustBudget)
    assert bob.status.accounts == {"user:bob": whole.status.accounts["user:bob"]}
    assert bob.status.accounts["user:bob"].reserved == 2
    assert (nobody.status.accounts, nobody.spec) == ({}, whole.spec)
    assert store.get(KEY) == whole  # the whole budget is not changed by asking for a part
