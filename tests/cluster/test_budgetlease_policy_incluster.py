"""Who may write a BudgetLease, against the real API server with the chart's
ValidatingAdmissionPolicy: a person's `kubectl apply` of one is refused with a message
saying what a BudgetLease is and how a lease is obtained, the operator's ServiceAccount
writes its records (and their status) as before, and `kubectl apply -f docs/examples/` is
admitted whole."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import config
from prometheus_client import CollectorRegistry

from budgetops.cli.incluster import kube_reconciler
from budgetops.observability.events import LogEvents
from tests.cluster.test_helm import render
from tests.cluster.test_leases_incluster import (
    GROUP,
    KEY,
    NAMESPACE,
    PLURAL,
    VERSION,
    Cluster,
    cluster,  # noqa: F401  (a fixture)
)
from tests.conftest import EXAMPLES
from tests.leases import call
from tests.waiting import eventually

RECORD = EXAMPLES / "records" / "budgetlease-llm.yaml"
OPERATOR = "system:serviceaccount:ops:budgetops"
"""The ServiceAccount `helm template demo -n ops` names (the chart's default)."""
REFUSED = "BudgetLease objects are records that BudgetOps writes"


@pytest.fixture
def policy(budget_crds: Any, binaries: Any) -> Iterator[Any]:
    """The chart's policy, binding and operator RBAC, applied as Helm would render them."""
    control_plane = budget_crds
    wanted = {
        ("ValidatingAdmissionPolicy", "demo-budgetops-leases"),
        ("ValidatingAdmissionPolicyBinding", "demo-budgetops-leases"),
        ("ClusterRole", "demo-budgetops"),
        ("ClusterRoleBinding", "demo-budgetops"),
    }
    documents = [
        doc for doc in render(binaries) if (doc["kind"], doc["metadata"]["name"]) in wanted
    ]
    assert len(documents) == len(wanted)
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    control_plane.kubectl("create", "namespace", "payments", check=False)
    # tests/cluster/test_crds.py writes this record without the policy (a CRD test).
    control_plane.kubectl(
        "delete", "budgetlease", "agent-runtime-lease", "-n", "payments", check=False
    )
    control_plane.kubectl("apply", "-f", "-", input=listed)
    try:
        deadline = time.monotonic() + 30
        while True:  # the API server loads a new policy and binding within a second or so
            tried = control_plane.kubectl(
                "apply", "--dry-run=server", "-f", str(RECORD), check=False
            )
            if tried.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert REFUSED in tried.stderr, tried.stdout + tried.stderr
        yield control_plane
    finally:
        control_plane.kubectl("delete", "-f", "-", input=listed, check=False)
        _until_admitted(control_plane)  # the tests after this one write BudgetLeases as admin
        control_plane.kubectl(
            "delete", "budgetlease", "agent-runtime-lease", "-n", "payments", check=False
        )


def _until_admitted(control_plane: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tried = control_plane.kubectl("apply", "--dry-run=server", "-f", str(RECORD), check=False)
        if tried.returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"the policy still refuses: {tried.stderr}")


def test_a_person_cannot_write_a_budgetlease_and_the_operator_can(policy: Any) -> None:
    control_plane = policy
    refused = control_plane.kubectl("apply", "-f", str(RECORD), check=False)
    assert refused.returncode != 0
    message = refused.stderr
    assert REFUSED in message, message
    assert f"({OPERATOR} only)" in message
    assert "lease API (POST /api/v1/auth/handshake" in message
    assert "docs/lease-api.md" in message
    absent = control_plane.kubectl("get", "bl", "-n", "payments", "-o", "name").stdout
    assert absent.strip() == "", "nothing was stored"

    as_operator = ("--as", OPERATOR)
    made = control_plane.kubectl("create", "-f", str(RECORD), *as_operator, check=False)
    assert made.returncode == 0, made.stderr
    patched = control_plane.kubectl(
        "patch", "bl", "agent-runtime-lease", "-n", "payments", "--subresource=status",
        "--type=merge", "-p", '{"status": {"phase": "Active", "granted": "10"}}', *as_operator,
        check=False,
    )  # fmt: skip
    assert patched.returncode == 0, patched.stderr

    changed = control_plane.kubectl(
        "label", "bl", "agent-runtime-lease", "-n", "payments", "mine=yes", check=False
    )
    assert changed.returncode != 0
    assert REFUSED in changed.stderr, "a person cannot change a record either"
    gone = control_plane.kubectl("delete", "bl", "agent-runtime-lease", "-n", "payments")
    assert gone.returncode == 0, "deleting a record is not refused: the mirror writes it again"


def test_the_examples_apply_whole(policy: Any) -> None:
    applied = policy.kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES), check=False)
    assert applied.returncode == 0, applied.stderr
    assert "riskbudget.budgetops.dev/payments-api " in applied.stdout
    assert "budgetlease" not in applied.stdout


def test_the_operator_still_records_a_real_lease(policy: Any, cluster: Cluster) -> None:  # noqa: F811
    """The lease mirror, running as the operator's ServiceAccount (impersonated, with the
    chart's RBAC), writes the record of a lease opened through the lease API."""
    made = cluster.agent(
        "create", "--provider", "openai", "--provider-key-secret", "openai/api-key"
    )
    agent, token = made["agent"], made["token"]
    eventually(lambda: agent in cluster.store.get(KEY).status.agents)  # type: ignore[union-attr]
    hello = {"ic_token": token, "requested_budget": 10, "runtime_version": "1.0.0"}
    status, body, text = call(cluster.port, "POST", "/auth/handshake", hello)
    assert status == 200, text
    eventually(lambda: cluster.store.cache.version(KEY) is not None)
    cluster.reconciler.reconcile(KEY)  # the same mirror as the cluster's admin: refused
    listed = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    assert listed["items"] == []
    api = config.new_client_from_config(cluster.kubeconfig)
    api.set_default_header("Impersonate-User", OPERATOR)
    try:
        operator = kube_reconciler(
            api,
            cluster.store,
            LogEvents(),
            CollectorRegistry(),
            versions=cluster.store.informer.version,
            namespace=NAMESPACE,
        )
        operator.reconcile(KEY)
    finally:
        api.close()
    listed = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    recorded = [i["metadata"]["annotations"]["budgetops.dev/lease-id"] for i in listed["items"]]
    assert recorded == [body["lease_id"]]
