"""A TrustBudget at the size of one object in the real API server: the change that would
not fit fails alone, with why, and the budget goes on charging the accounts it holds.

Before, etcd refused the whole batch's write ("etcdserver: request is too large", a 500),
and every batch after it that grew the status, until keys aged out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import InvalidCharge
from budgetops.store.commit import stored_size
from budgetops.store.kube import OBJECT_LIMIT, KubeStore
from tests.charges import charging
from tests.cluster.test_kube_store import hot_budget

KEY = BudgetKey("TrustBudget", "full")


@pytest.fixture
def stores(budget_crds: Any) -> Iterator[Callable[..., KubeStore]]:
    made: list[KubeStore] = []

    def make(**kwargs: Any) -> KubeStore:
        api = config.new_client_from_config(str(budget_crds.kubeconfig))
        made.append(KubeStore(api, group_commit=False, **kwargs).start())
        return made[-1]

    yield make
    made[0].delete(KEY)
    for store in made:
        store.stop()


def accounts(first: int, count: int, now: datetime) -> Callable[[Budget], Decision]:
    """One change that opens accounts first..first+count-1, a charge each."""

    def open_them(budget: Budget) -> Decision:
        for n in range(first, first + count):
            decision = charging(f"uid-{n}", account=f"user:u{n:06d}", now=now)(budget)
        return decision

    return open_them


def test_a_budget_as_big_as_one_object_refuses_only_the_change_that_would_not_fit(
    stores: Callable[..., KubeStore],
) -> None:
    store, unbounded = stores(), stores(limit=10**9)
    store.apply(hot_budget(KEY.name, 10))
    now = system_clock()
    opened = 0
    while stored_size(store.get(KEY)) < OBJECT_LIMIT - 60_000:
        step = 1_000 if stored_size(store.get(KEY)) < OBJECT_LIMIT - 400_000 else 100
        store.update_status(KEY, accounts(opened, step, now))
        opened += step
    size = stored_size(store.get(KEY))
    assert OBJECT_LIMIT - 60_000 <= size <= OBJECT_LIMIT, "written by the API server"

    # Past what etcd takes: without the limit, the API server refuses the whole write.
    with pytest.raises(ApiException) as refused:
        unbounded.update_status(KEY, accounts(opened, 400, now))
    assert refused.value.status == 500
    assert "request is too large" in str(refused.value.body)

    # With it, the change alone is refused, saying why; nothing of it is written.
    with pytest.raises(InvalidCharge) as full:
        store.update_status(KEY, accounts(opened, 400, now))
    message = str(full.value)
    assert message.startswith(f"{KEY} is full: this change would make it ")
    assert f"({opened + 400:,} accounts and the keys of 0 requests" in message
    assert f"one object holds {OBJECT_LIMIT:,}; nothing was charged" in message

    # The accounts it holds are charged as before, and a new one while there is room.
    for n in (0, opened - 1):
        decision = store.update_status(
            KEY, charging(f"again-{n}", account=f"user:u{n:06d}", now=now)
        )
        assert decision.reason == "Charged"
    decision = store.update_status(KEY, charging("newcomer", account="user:newcomer", now=now))
    assert decision.reason == "Charged"
    stored = store.get(KEY)
    assert isinstance(stored, TrustBudget)
    assert len(stored.status.accounts) == opened + 1
    assert stored.status.accounts["user:u000000"].reserved == 2
    assert stored_size(stored) <= OBJECT_LIMIT
