"""The generated CRDs in a real API server: schema, CEL rules, printer columns, status CAS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.conftest import EXAMPLES
from tests.unit.test_models import expectation

INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


@pytest.fixture(scope="module")
def crds(budget_crds: Any) -> Any:
    control_plane = budget_crds
    control_plane.kubectl("create", "namespace", "payments", check=False)
    return control_plane


@pytest.fixture(scope="module")
def api(crds: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(str(crds.kubeconfig)))


def test_every_crd_is_established_with_short_names_and_category(crds: Any) -> None:
    out = json.loads(crds.kubectl("get", "crd", "-o", "json").stdout)
    names = {
        item["spec"]["names"]["kind"]: item["spec"]["names"]
        for item in out["items"]
        if item["spec"]["group"] == "budgetops.dev"
    }
    assert {kind: n["shortNames"] for kind, n in names.items()} == {
        "TrustBudget": ["tb"],
        "RiskBudget": ["rb"],
        "BudgetLease": ["bl"],
        "BudgetApproval": ["ba"],
    }
    assert all(n["categories"] == ["budgets"] for n in names.values())


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_apply(crds: Any, path: Path) -> None:
    result = crds.kubectl("apply", "-f", str(path))
    assert (
        "created" in result.stdout or "configured" in result.stdout or "unchanged" in result.stdout
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_by_the_api_server(crds: Any, path: Path) -> None:
    result = crds.kubectl("apply", "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    assert expectation(path, "expect-server") in result.stderr, result.stderr


def test_kubectl_get_budgets_shows_the_printer_columns(crds: Any) -> None:
    crds.kubectl("apply", "-f", str(EXAMPLES))
    table = crds.kubectl("get", "budgets", "-A").stdout
    assert "trustbudget.budgetops.dev/developer-certificates" in table
    assert "riskbudget.budgetops.dev/payments-api" in table
    header = crds.kubectl("get", "rb", "-n", "payments").stdout.splitlines()[0].split()
    assert header == ["NAME", "SERVICE", "WINDOW", "CONSUMED", "ALLOCATION", "USED", "BAND", "AGE"]


def test_a_status_written_by_budgetops_is_accepted_and_kept(
    crds: Any, api: client.CustomObjectsApi
) -> None:
    """The status schema matches what the engine writes; nothing is pruned."""
    from datetime import UTC, datetime, timedelta

    from budgetops.apis.resources import RiskBudget
    from budgetops.engine.decisions import Release, admit_risk

    crds.kubectl("apply", "-f", str(EXAMPLES / "riskbudget-payments.yaml"))
    live = api.get_namespaced_custom_object(
        "budgetops.dev", "v1alpha1", "payments", "riskbudgets", "payments-api"
    )
    budget = RiskBudget.model_validate(live)
    admit_risk(
        budget.status,
        budget.spec,
        release=Release("v1.0.0", 50, "standard", ref="Deployment/x"),
        now=datetime(2026, 11, 23, 12, tzinfo=UTC),
        ttl=timedelta(minutes=5),
    )
    body = budget.to_wire()
    written = api.replace_namespaced_custom_object_status(
        "budgetops.dev", "v1alpha1", "payments", "riskbudgets", "payments-api", body
    )
    assert written["status"] == body["status"]
    columns = crds.kubectl("get", "rb", "-n", "payments", "--no-headers").stdout.split()
    assert columns[1:7] == ["payments-api", "2026-11", "50", "120", "41.7", "Yellow"]


def test_a_stale_resource_version_on_status_gets_409(
    crds: Any, api: client.CustomObjectsApi
) -> None:
    crds.kubectl("apply", "-f", str(EXAMPLES / "trustbudget-certificates.yaml"))
    args = ("budgetops.dev", "v1alpha1", "trustbudgets", "developer-certificates")
    first = api.get_cluster_custom_object(*args)
    first["status"] = {"exhaustedAccounts": 0}
    api.replace_cluster_custom_object_status(*args, first)  # moves the resourceVersion on
    first["status"] = {"exhaustedAccounts": 1}
    with pytest.raises(ApiException) as conflict:
        api.replace_cluster_custom_object_status(*args, first)
    assert conflict.value.status == 409


def test_cel_rules_reject_what_pydantic_rejects(crds: Any) -> None:
    """Rules the schema alone cannot say are enforced by the server too (CEL)."""
    document = yaml.safe_load((EXAMPLES / "records" / "budgetlease-llm.yaml").read_text())
    document["metadata"]["name"] = "zero-amount"
    document["spec"]["amount"] = "0.00"
    document["spec"].pop("refreshThreshold")
    result = crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), check=False)
    assert "must be a positive amount" in result.stderr
    lease = yaml.safe_load((EXAMPLES / "records" / "budgetlease-llm.yaml").read_text())
    crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(lease))
    lease["spec"]["budgetRef"]["name"] = "another-budget"
    result = crds.kubectl("apply", "-f", "-", input=yaml.safe_dump(lease), check=False)
    assert "budgetRef is immutable" in result.stderr
