"""`spec.failMode` through the in-cluster store: while the API server cannot be reached, a
failOpen TrustBudget admits its requests uncharged and a failClosed one refuses; once it
answers again, the owed charge lands in the real status once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from kubernetes import client, config

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import RETRY_MESSAGE, Admission
from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.store.kube import KubeStore
from tests.unit.test_admission import request
from tests.waiting import eventually

OPEN = BudgetKey("TrustBudget", "fail-open")
CLOSED = BudgetKey("TrustBudget", "fail-closed")
UNREACHABLE = "https://127.0.0.1:1"
"""Nothing listens on port 1: each request is refused at once, as by an API server that is down."""


def budget(key: BudgetKey, user: str, mode: str) -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": key.name},
            "spec": {
                "subjects": {"users": [user]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 5,
                "resetInterval": "24h",
                "failMode": mode,
            },
        }
    )


@pytest.fixture
def api(budget_crds: Any) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(budget_crds.kubeconfig))
    yield api
    api.close()


def csr(user: str, uid: str) -> bytes:
    return json.dumps(request(user=user, groups=(), uid=uid)).encode()


def test_fail_open_admits_while_the_api_server_is_away_and_settles_once(
    api: client.ApiClient,
) -> None:
    kube = KubeStore(api).start()
    for key, user, mode in ((OPEN, "opener", "failOpen"), (CLOSED, "closer", "failClosed")):
        kube.apply(budget(key, user, mode))
    eventually(lambda: all(kube.cache.version(k) for k in (OPEN, CLOSED)))
    admission = Admission(kube, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    admission.charging.retry_after = 3600.0  # settled by hand below, when the server is back
    reachable, hook = api.configuration.host, api.configuration.refresh_api_key_hook
    api.configuration.refresh_api_key_hook = None  # it would load the kubeconfig's host again
    try:
        api.configuration.host = UNREACHABLE
        opened = asyncio.run(admission.review(csr("opener", "fo-1"))).body["response"]
        closed = asyncio.run(admission.review(csr("closer", "fc-1"))).body["response"]
        assert opened["allowed"] is True
        assert any("not" in w and "charged" in w for w in opened["warnings"]), opened
        assert closed["allowed"] is False
        assert closed["status"]["message"] == RETRY_MESSAGE
        assert len(admission.charging.owed) == 1

        api.configuration.host = reachable
        fresh = TrustBudget.model_validate(
            client.CustomObjectsApi(api).get_cluster_custom_object(
                "budgetops.dev", "v1alpha1", "trustbudgets", OPEN.name
            )
        )
        assert "user:opener" not in fresh.status.accounts, "nothing was charged while away"
        for _ in range(2):  # the second finds nothing owed
            assert asyncio.run(admission.charging.settle_owed()) is True
        settled = "budgetops_failed_open_settlements_total"
        labels = {"kind": "TrustBudget", "budget": "fail-open", "outcome": "settled"}
        assert admission.metrics.registry.get_sample_value(settled, labels) == 1
        charged = TrustBudget.model_validate(
            client.CustomObjectsApi(api).get_cluster_custom_object(
                "budgetops.dev", "v1alpha1", "trustbudgets", OPEN.name
            )
        )
        account = charged.status.accounts["user:opener"]
        assert (account.balance, account.reserved, sorted(account.reservations)) == (4, 1, ["fo-1"])
    finally:
        api.configuration.host, api.configuration.refresh_api_key_hook = reachable, hook
        for key in (OPEN, CLOSED):
            kube.delete(key)
        kube.stop()
