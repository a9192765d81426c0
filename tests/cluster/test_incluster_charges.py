"""All or nothing through the in-cluster store: two TrustBudgets in the real API server
govern one requester, and a request one of them refuses is charged in neither."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from kubernetes import config

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import Admission
from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.store.kube import KubeStore
from tests.unit.test_admission import request
from tests.waiting import eventually

USER = "both-budgets"


def budget(name: str, balance: int, account_key: str) -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "subjects": {"users": [USER], "groups": ["pair-team"]},
                "accountKey": account_key,
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": balance,
                "resetInterval": "24h",
            },
        }
    )


@pytest.fixture
def store(budget_crds: Any) -> Iterator[KubeStore]:
    api = config.new_client_from_config(str(budget_crds.kubeconfig))
    kube = KubeStore(api).start()
    keys = [
        BudgetKey.of(kube.apply(budget("pair-user", 5, "user:${username}"))),
        BudgetKey.of(kube.apply(budget("pair-team", 2, "group:${group}"))),
    ]
    eventually(lambda: all(kube.cache.version(k) for k in keys))
    try:
        yield kube
    finally:
        for key in keys:
            kube.delete(key)
        kube.stop()
        api.close()


def csr(uid: str) -> bytes:
    return json.dumps(request(user=USER, groups=("pair-team",), uid=uid)).encode()


def test_a_request_the_second_budget_refuses_is_charged_in_neither(store: KubeStore) -> None:
    admission = Admission(store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    allowed = [
        asyncio.run(admission.review(csr(f"pair-{n}"))).body["response"]["allowed"]
        for n in range(4)
    ]
    assert allowed == [True, True, False, False]
    user = store.get(BudgetKey("TrustBudget", "pair-user"))
    team = store.get(BudgetKey("TrustBudget", "pair-team"))
    assert isinstance(user, TrustBudget)
    assert isinstance(team, TrustBudget)
    mine = user.status.accounts[f"user:{USER}"]
    assert (mine.balance, mine.reserved, sorted(mine.reservations)) == (3, 2, ["pair-0", "pair-1"])
    assert team.status.accounts["group:pair-team"].reserved == 2
