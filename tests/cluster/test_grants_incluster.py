"""A grant through the real API server: `kubectl budget grant` raises a TrustBudget
account's allocation in the stored status, `kubectl budget status` shows it, and the
reconciler's pass at its expiry (an injected clock, through the store's compare-and-swap on
/status) takes it out and drops the account back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from kubernetes import config

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.reconcile import reconcile_trust
from budgetops.store.kube import KubeStore
from tests.cluster.test_plugin import kubectl_budget  # noqa: F401  (the fixture)

CERTS = BudgetKey("TrustBudget", "plugin-certs")


def _status(budget_crds: Any) -> dict[str, Any]:
    found = budget_crds.kubectl("get", "tb", CERTS.name, "-o", "json").stdout
    return json.loads(found)["status"]  # type: ignore[no-any-return]


def test_a_grant_raises_the_balance_and_is_gone_at_expiry(
    kubectl_budget: Any,  # noqa: F811
    budget_crds: Any,
) -> None:
    code, out = kubectl_budget(
        "grant", CERTS.name, "--account", "user:granted", "--amount", "2", "--for", "1h",
        "--reason", "on call this week", "--by", "ann",
    )  # fmt: skip
    assert code == 0, out
    assert "allocation now 5, balance 5" in out
    live = _status(budget_crds)
    [grant] = live["grants"]
    assert (grant["account"], grant["amount"], grant["by"]) == ("user:granted", "2", "ann")
    assert live["accounts"]["user:granted"]["balance"] == "5"
    code, out = kubectl_budget("status", CERTS.name)
    assert f"Grant: user:granted +2 points until {grant['expiresAt']} by ann" in out

    expiry = datetime.fromisoformat(grant["expiresAt"])

    def reconcile(budget: Budget) -> None:
        assert isinstance(budget, TrustBudget)
        reconcile_trust(budget.status, budget.spec, budget=CERTS.name, generation=None,
                        now=expiry, seen=None, samples=UsageSamples())  # fmt: skip

    store = KubeStore(config.new_client_from_config(str(budget_crds.kubeconfig))).start()
    try:
        store.update_status(CERTS, reconcile)
    finally:
        store.stop()
    live = _status(budget_crds)
    assert live.get("grants", []) == []
    assert live["accounts"]["user:granted"]["balance"] == "3"
    code, out = kubectl_budget("status", CERTS.name)
    assert "Grant:" not in out
