"""KubeStore's group commit, with its two I/O points replaced: a forced 409 shows that a
denied waiter is answered once and never re-run, so it cannot be admitted by a retry."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from kubernetes import client

from budgetops.apis.resources import Budget, TrustBudget
from budgetops.engine.decisions import Decision, admit_trust
from budgetops.store import BudgetKey
from budgetops.store.commit import Waiter
from budgetops.store.kube import KubeStore

from .test_decisions import NOW, trust_budget

KEY = BudgetKey("TrustBudget", "certs")


class ScriptedStore(KubeStore):
    """The real commit logic over a budget in memory; `_write` answers 409 as scripted."""

    def __init__(self, budget: TrustBudget, conflicts: int) -> None:
        super().__init__(client.ApiClient(client.Configuration()))
        self.stored = budget
        self.conflicts_left = conflicts
        self.snapshots: list[bool] = []

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        self.snapshots.append(fresh)
        return self.stored.model_copy(deep=True)

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        assert isinstance(budget, TrustBudget)
        if self.conflicts_left:
            self.conflicts_left -= 1
            return False
        self.stored = budget
        return True


def counted_charge(uid: str, runs: dict[str, int]) -> Any:
    def change(budget: Budget) -> Decision:
        assert isinstance(budget, TrustBudget)
        runs[uid] = runs.get(uid, 0) + 1
        return admit_trust(
            budget.status,
            budget.spec,
            account="user:alice",
            cost=budget.spec.cost,
            key=uid,
            ref=uid,
            now=NOW,
            ttl=timedelta(minutes=5),
        )

    return change


def waiter(change: Any, seconds: float = 5) -> Waiter:
    return Waiter(change, lambda d: d.changes_ledger, time.monotonic() + seconds)


def test_a_denied_waiter_is_answered_once_and_never_rerun_after_a_conflict() -> None:
    store = ScriptedStore(trust_budget(initialBalance=1), conflicts=1)
    runs: dict[str, int] = {}
    first, second = waiter(counted_charge("a", runs)), waiter(counted_charge("b", runs))
    store.commits.commit(KEY, [first, second])
    assert first.result.reason == "Charged"
    assert second.result.reason == "Exhausted", "denied on the snapshot that charged 'a'"
    assert runs == {"a": 2, "b": 1}, "only the charge that needed a write was decided again"
    assert store.snapshots == [False, True], "the retry read the budget afresh"
    assert store.stored.status.accounts["user:alice"].reserved == 1


def test_every_waiter_of_a_batch_is_answered_by_one_write() -> None:
    store = ScriptedStore(trust_budget(initialBalance=10), conflicts=0)
    runs: dict[str, int] = {}
    waiters = [waiter(counted_charge(f"u{i}", runs)) for i in range(5)]
    store.commits.commit(KEY, waiters)
    assert all(w.done.is_set() and w.result.reason == "Charged" for w in waiters)
    assert (store.stats.batches, store.stats.charges, store.stats.largest_batch) == (1, 5, 5)


def test_endless_conflicts_end_at_the_deadline_in_a_retriable_refusal() -> None:
    store = ScriptedStore(trust_budget(initialBalance=10), conflicts=10**9)
    stuck = waiter(counted_charge("x", {}), seconds=0.3)
    done = threading.Event()
    threading.Thread(target=lambda: (store.commits.commit(KEY, [stuck]), done.set())).start()
    assert done.wait(5), "the retries stop at the waiter's deadline"
    assert type(stuck.error).__name__ == "ChargeTimeout"
    assert "could not be charged in time" in str(stuck.error)
    assert store.stats.conflicts > 1, "it did retry until then"
