"""In a cluster, a change that would leave a status the models cannot read fails alone.

The API server checks nothing inside a ledger's accounts and settled keys (they are opaque
to the CRD schema), so before, such a status was stored and the budget then governed nothing
until fixed. Here one batch of three is committed against the real API server; the middle
change spoils the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import config

from budgetops.apis.ledger import KEY_MAX
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.ledger import InvalidCharge, audit
from budgetops.store.commit import Waiter
from budgetops.store.kube import KubeStore
from tests.charges import charging


def budget(name: str) -> TrustBudget:
    """A budget charged directly here; it governs nobody else's requests."""
    return TrustBudget.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "subjects": {"users": ["readback-nobody"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 10,
            },
        }
    )


@pytest.fixture
def stores(budget_crds: Any) -> Iterator[Callable[[], KubeStore]]:
    made: list[KubeStore] = []

    def make() -> KubeStore:
        api = config.new_client_from_config(str(budget_crds.kubeconfig))
        made.append(KubeStore(api).start())
        return made[-1]

    yield make
    for store in made:
        store.stop()


def waiter(change: Callable[[Budget], Any]) -> Waiter:
    deadline = time.monotonic() + 10
    return Waiter(change, lambda r: r is True or r.changes_ledger, deadline, deadline)


def too_long_settled_key(budget: Budget) -> bool:
    assert isinstance(budget, TrustBudget)
    budget.status.remember_settled("k" * (KEY_MAX + 1), datetime.now(UTC))
    return True


def amount_past_the_bound(budget: Budget) -> bool:
    assert isinstance(budget, TrustBudget)
    account = budget.status.accounts["user:alice"]
    account.allocation += Decimal(10**16)
    account.spent += Decimal(10**16)
    return True


@pytest.mark.parametrize("spoil", [too_long_settled_key, amount_past_the_bound])
def test_the_api_server_never_stores_a_status_that_does_not_read_back(
    stores: Callable[[], KubeStore], spoil: Callable[[Budget], bool]
) -> None:
    writer = stores()
    key = BudgetKey.of(writer.apply(budget(f"readback-{spoil.__name__.replace('_', '-')}")))
    batch = [waiter(charging("before")), waiter(spoil), waiter(charging("after"))]
    writer.commits.commit(key, batch)
    first, spoiler, last = batch
    assert first.error is None
    assert first.result.reason == "Charged"
    assert last.error is None
    assert last.result.reason == "Charged"
    assert isinstance(spoiler.error, InvalidCharge)
    assert "does not read back" in str(spoiler.error)
    reader = stores()  # reads what the API server stored, from its own list and watch
    stored = reader.get(key)
    assert isinstance(stored, TrustBudget)
    assert [BudgetKey.of(b) for b in reader.list() if BudgetKey.of(b) == key] == [key]
    account = stored.status.accounts["user:alice"]
    assert account.reserved == 2
    assert account.allocation == 10
    assert audit(stored.status) == []
