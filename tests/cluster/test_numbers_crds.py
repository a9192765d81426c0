"""Six-decimal money in a real API server: the CRD takes it, and a status holding it reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from budgetops.apis.resources import TrustBudget
from budgetops.engine.decisions import admit_trust
from tests.conftest import EXAMPLES

ARGS = ("budgetops.dev", "v1alpha1", "trustbudgets")


@pytest.fixture(scope="module")
def api(budget_crds: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(str(budget_crds.kubeconfig)))


def _applied(budget_crds: Any, name: str, **spec: str) -> Any:
    document = yaml.safe_load((EXAMPLES / "trustbudget-llm-spend.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"] |= spec
    return budget_crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)


def test_a_sub_cent_cost_is_accepted_and_its_status_reads_back(
    budget_crds: Any, api: client.CustomObjectsApi
) -> None:
    """The CRD refused a cost of 0.0457; a status spent 0.0457 must be kept as written."""
    applied = _applied(budget_crds, "sub-cent", cost="0.0457", initialBalance="100.000001")
    assert applied.returncode == 0, applied.stderr
    budget = TrustBudget.model_validate(api.get_cluster_custom_object(*ARGS, "sub-cent"))
    assert (budget.spec.cost, budget.spec.initial_balance) == (
        Decimal("0.0457"),
        Decimal("100.000001"),
    )
    decision = admit_trust(
        budget.status,
        budget.spec,
        account="serviceaccount:payments/agent",
        cost=budget.spec.cost,
        key="uid-1",
        ref="BudgetLease/payments/x",
        now=datetime(2026, 11, 23, 12, tzinfo=UTC),
        ttl=timedelta(minutes=5),
    )
    assert decision.allowed
    written = api.replace_cluster_custom_object_status(*ARGS, "sub-cent", budget.to_wire())
    again = TrustBudget.model_validate(written)
    account = again.status.accounts["serviceaccount:payments/agent"]
    assert (account.reserved, account.balance) == (Decimal("0.0457"), Decimal("99.954301"))


def test_seven_decimals_are_refused_by_the_api_server(budget_crds: Any) -> None:
    refused = _applied(budget_crds, "seven-places", cost="0.0000001")
    assert refused.returncode != 0
    assert "at most 6 decimals" in refused.stderr
