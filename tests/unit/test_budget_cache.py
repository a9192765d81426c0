"""The in-cluster store's cache, fed by hand instead of by a watch."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from budgetops.apis.resources import RESOURCES, BudgetKey
from budgetops.store.informer import BudgetCache
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


def test_a_relist_keeps_what_is_unchanged_and_wakes_listeners_of_what_moved() -> None:
    """Before, a re-list dropped every parse and woke nobody: a budget changed or deleted
    while the watch was down went unnoticed until the next idle look."""
    cache = BudgetCache(client.CustomObjectsApi(client.ApiClient(client.Configuration())))
    same = stored(100, generation=1, version="1")
    gone = stored(100, generation=1, version="1")
    gone["metadata"]["name"] = "gone"
    cache._replace("TrustBudget", [same, gone])
    kept = cache.get(BudgetKey("TrustBudget", "certs"))
    moved = stored(100, generation=1, version="1")
    assert cache._replace("TrustBudget", [moved]) == [BudgetKey("TrustBudget", "gone")]
    assert cache.get(BudgetKey("TrustBudget", "certs")) is kept, "unchanged: not parsed again"
    changed = stored(100, generation=1, version="7", charges=1)
    assert cache._replace("TrustBudget", [changed]) == [BudgetKey("TrustBudget", "certs")]


def test_a_deleted_budget_wakes_its_listeners_once() -> None:
    cache = BudgetCache(client.CustomObjectsApi(client.ApiClient(client.Configuration())))
    woken: list[BudgetKey] = []
    cache.listeners.append(woken.append)
    cache.put(stored(100, generation=1, version="1"))
    cache.forget(BudgetKey("TrustBudget", "certs"))
    cache.forget(BudgetKey("TrustBudget", "certs"))
    assert woken == [BudgetKey("TrustBudget", "certs")] * 2  # put, then the deletion


def test_readiness_needs_word_from_the_api_server_within_a_watch_and_its_slack() -> None:
    """Before, a half-open watch connection blocked forever while /readyz said OK; now the
    client gives up on a read after the watch's length plus slack, and readiness asks that
    every kind's watch heard from the API server within that time."""
    cache = BudgetCache(
        client.CustomObjectsApi(client.ApiClient(client.Configuration())),
        watch_seconds=60,
        read_slack=15,
    )
    assert not cache.fresh_watch(), "never heard from: not ready"
    for kind in RESOURCES:
        cache._hear(kind)
    assert cache.fresh_watch()
    cache._heard["RiskBudget"] -= 76  # its watch has been silent past 60 s + 15 s
    assert not cache.fresh_watch()
