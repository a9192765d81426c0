"""The in-cluster cache as an informer, against a real API server: it resumes watches from
the last version instead of listing again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from budgetops.apis.resources import BudgetKey
from budgetops.store.kube import KubeStore
from tests.cluster.test_kube_store import hot_budget
from tests.waiting import eventually


@pytest.fixture
def connected(budget_crds: Any) -> Iterator[tuple[client.ApiClient, Any]]:
    api = config.new_client_from_config(str(budget_crds.kubeconfig))
    try:
        yield api, budget_crds
    finally:
        api.close()


def test_watches_resume_from_their_version_without_listing_again(
    connected: tuple[client.ApiClient, Any],
) -> None:
    """Before, every watch that ended (each 240 s) re-listed every budget and dropped every
    parse; now only a 410 does."""
    api, control_plane = connected
    store = KubeStore(api)
    store.cache.watch_seconds = 1
    store.start()
    key = BudgetKey("TrustBudget", "resumed")
    try:
        listed = store.cache.lists
        store.apply(hot_budget("resumed", 3))
        woken: list[BudgetKey] = []
        store.cache.listeners.append(woken.append)
        threading.Event().wait(3)  # about three watches end on time meanwhile
        patch = '{"spec": {"initialBalance": 5}}'
        control_plane.kubectl("patch", "tb", "resumed", "--type=merge", "-p", patch)

        def edited() -> bool:
            held = store.cache.spec_only(key)
            return held is not None and held.spec.initial_balance == 5

        eventually(edited, within=10)
        assert key in woken
        assert store.cache.lists == listed, "no re-list after a watch that ended on time"
        assert store.ready()
    finally:
        store.delete(key)
        store.stop()
