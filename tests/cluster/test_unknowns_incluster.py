"""Unknowns through the real API server: Deployments carrying `budgetops.dev/unknowns` are
warned, then blocked, by a `budgetops run` replica; each signed verdict's `actualCounts` are
what was sent; the tally is stored in the RiskBudget's status (the CRD keeps the field) and
shown by `status --service`; `check --unknowns` against the cluster decides as the webhook
did."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_verdicts_incluster import OPERATOR_NAMESPACE, admission_replica, budgetops

NAMESPACE = "unknowns-shop"
HOOK = "budgetops-unknowns"
LIMITS = {
    "maxUnknownCount": 4,
    "maxCumulativeUncertainty": "2.00",
    "reasonLimits": {"Reachability": 3},
}
SENT = {"Reachability": 4, "Identity": 1}


def deployment(name: str, unknowns: dict[str, int], uncertainty: str) -> dict[str, Any]:
    """A Deployment the RiskBudget `shop-NAME` pays for."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": name},
            "annotations": {
                "budgetops.dev/risk-points": "5",
                "budgetops.dev/unknowns": json.dumps(unknowns),
                "budgetops.dev/uncertainty": uncertainty,
            },
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "api", "image": f"shop/{name}:1"}]},
            },
        },
    }


def risk_budget(app: str, action: str) -> dict[str, Any]:
    return {
        "apiVersion": "budgetops.dev/v1alpha1",
        "kind": "RiskBudget",
        "metadata": {"name": f"shop-{app}", "namespace": NAMESPACE},
        "spec": {
            "serviceId": f"shop-{app}",
            "allocation": 100,
            "selector": {"matchLabels": {"app": app}},
            "unknowns": {**LIMITS, "action": action},
        },
    }


@pytest.fixture(scope="module")
def operator(budget_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One `budgetops run` replica (admission only) behind a webhook for this namespace."""
    control_plane = budget_crds
    for namespace in (OPERATOR_NAMESPACE, NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    for app, action in (("warned", "warn"), ("blocked", "block")):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(risk_budget(app, action)))
    folder = tmp_path_factory.mktemp("unknowns")
    with admission_replica(control_plane, folder, hook=HOOK, namespace=NAMESPACE):
        yield control_plane


def actual_counts(control_plane: Any, workload: str) -> Any:
    """The `budgetCheck.actualCounts` of the latest verdict on `workload`, once kept."""
    deadline = time.monotonic() + 20
    while True:
        shown = budgetops(control_plane, "verdict", workload, "-n", NAMESPACE, "-o", "json")
        if shown.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    payload = json.loads(base64.b64decode(json.loads(shown.stdout)["payload"]))
    return payload["predicate"]["budgetCheck"]


def tally(control_plane: Any, app: str) -> Any:
    budget = control_plane.kubectl("get", "rb", f"shop-{app}", "-n", NAMESPACE, "-o", "json")
    return json.loads(budget.stdout)["status"]["unknowns"]


def test_unknowns_warn_then_block_at_admission_and_the_tally_is_stored(operator: Any) -> None:
    control_plane = operator
    warned = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(deployment("warned", SENT, "0.5"))
    )
    assert "exceeds the unknowns budget: unknowns in total: 5 exceeds the limit of 4" in (
        warned.stderr
    ), warned.stderr
    check = actual_counts(control_plane, "deployment/warned")
    assert check["actualCounts"] == {
        "total": 5,
        "cumulativeUncertainty": "0.50",
        "byReason": {"Identity": 1, "Reachability": 4},
    }
    assert check["result"] == "warn"
    assert tally(control_plane, "warned") == {
        "releases": 1,
        "total": 5,
        "cumulativeUncertainty": "0.5",
        "byReason": {"Identity": 1, "Reachability": 4},
        "warned": 1,
        "blocked": 0,
    }

    sent = {"Reachability": 9}
    blocked = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(deployment("blocked", sent, "3")), check=False
    )
    assert blocked.returncode != 0
    why = (
        "has too many unknowns for shop-blocked: unknowns in total: 9 exceeds the limit of 4; "
        "cumulative uncertainty: 3 exceeds the limit of 2.00; "
        "unknowns for reason Reachability: 9 exceeds the limit of 3."
    )
    assert why in blocked.stderr, blocked.stderr
    check = actual_counts(control_plane, "deployment/blocked")
    assert check["actualCounts"] == {
        "total": 9,
        "cumulativeUncertainty": 3,
        "byReason": {"Reachability": 9},
    }
    assert check["result"] == "fail"
    stored = tally(control_plane, "blocked")
    assert (stored["releases"], stored["total"], stored["blocked"]) == (0, 0, 1)

    flags = ("--points", "5", "--unknowns", json.dumps(sent), "--uncertainty", "3")
    checked = budgetops(
        control_plane, "check", "--service", "shop-blocked", "-n", NAMESPACE, *flags
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stdout.startswith("may ship: no\n")
    assert why in checked.stdout
    shown = budgetops(control_plane, "status", "--service", "shop-warned", "-n", NAMESPACE)
    assert "Unknowns: 5 in 1 releases (Identity 1, Reachability 4), uncertainty 0.50; " in (
        shown.stdout
    ), shown.stdout
    assert "1 let through past a limit, 0 blocked" in shown.stdout
    shown = budgetops(control_plane, "status", "--service", "shop-blocked", "-n", NAMESPACE)
    assert "Unknowns: 0 in 0 releases, uncertainty 0; 0 let through past a limit, 1 blocked" in (
        shown.stdout
    ), shown.stdout
