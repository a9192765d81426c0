"""The in-cluster store's cache, fed by hand instead of by a watch."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from budgetops.store import BudgetKey
from budgetops.store.kube import BudgetCache
from tests.charges import charging

from .test_decisions import NOW, trust_budget


def stored(balance: int, *, generation: int, version: str, charges: int = 0) -> dict[str, Any]:
    """A TrustBudget as the API server would hand it over."""
    budget = trust_budget(initialBalance=balance)
    for n in range(charges):
        charging(f"uid-{n}", now=NOW)(budget)
    budget.metadata.uid = "b1"
    budget.metadata.generation = generation
    budget.metadata.resource_version = version
    return budget.to_wire()


def test_classification_parses_a_budget_once_per_spec_not_per_status_write() -> None:
    cache = BudgetCache(client.CustomObjectsApi(client.ApiClient(client.Configuration())))
    key = BudgetKey("TrustBudget", "certs")
    cache.put(stored(100, generation=1, version="1"))
    first = cache.spec_only(key)
    assert first is not None
    assert first.status.accounts == {}, "no status parsed"
    cache.put(stored(100, generation=1, version="2", charges=3))  # a batch of charges
    assert cache.spec_only(key) is first, "a status write is no reason to parse again"
    full = cache.get(key)
    assert full is not None
    assert full.status.accounts["user:alice"].reserved == 3, "the full copy has the status"
    cache.put(stored(50, generation=2, version="3", charges=3))  # the spec was edited
    edited = cache.spec_only(key)
    assert edited is not None
    assert edited is not first
    assert edited.spec.initial_balance == 50
