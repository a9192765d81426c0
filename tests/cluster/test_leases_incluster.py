"""Leases in a cluster, against the real API server: an agent created with the CLI, its
provider key in a Secret, the lease API over the in-cluster store, BudgetLease objects kept
by the reconciler, and a revoked agent refused."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from prometheus_client import CollectorRegistry

from budgetops.adapters.secrets import KubeSecrets
from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.resources import BudgetKey, TrustBudget, parse_manifest
from budgetops.cli.incluster import kube_reconciler
from budgetops.crypto import sealing
from budgetops.engine.clock import system_clock
from budgetops.leaseapi.app import PREFIX, lease_app
from budgetops.observability.events import LogEvents
from budgetops.store.kube import KubeStore
from budgetops.usecases.leasing import LeaseService, LeaseSettings
from budgetops.usecases.reconciling import Reconciler
from tests.conftest import EXAMPLES
from tests.leases import call
from tests.waiting import eventually

NAMESPACE = "default"
KEY = BudgetKey("TrustBudget", "agent-llm-spend")
GROUP, VERSION, PLURAL = "budgetops.dev", "v1alpha1", "budgetleases"


@dataclass
class Cluster:
    kubeconfig: str
    port: int
    store: KubeStore
    reconciler: Reconciler
    custom: client.CustomObjectsApi

    def agent(self, *argv: str) -> dict[str, str]:
        """`budgetops agent ...` as a user runs it, against the API server."""
        done = subprocess.run(
            [sys.executable, "-m", "budgetops.cli.main", "agent", *argv, "--budget", KEY.name,
             "--kubeconfig", self.kubeconfig, "--namespace", NAMESPACE],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)

    def leases(self) -> dict[str, Any]:
        """BudgetLease objects by lease id, once the reconciler has seen the budget."""
        eventually(lambda: self.store.cache.version(KEY) is not None)
        self.reconciler.reconcile(KEY)
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        return {i["metadata"]["annotations"]["budgetops.dev/lease-id"]: i for i in listed["items"]}

    def spent(self, agent: str) -> Any:
        budget = self.custom.get_cluster_custom_object(GROUP, VERSION, "trustbudgets", KEY.name)
        return budget["status"]["accounts"][agent]


@pytest.fixture
def cluster(budget_crds: Any) -> Iterator[Cluster]:
    kubeconfig = str(budget_crds.kubeconfig)
    api = config.new_client_from_config(kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    store = KubeStore(api).start()
    budget = parse_manifest(yaml.safe_load((EXAMPLES / "trustbudget-llm-spend.yaml").read_text()))
    assert isinstance(budget, TrustBudget)
    store.apply(budget)
    core.create_namespaced_secret(
        NAMESPACE,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="openai"), string_data={"api-key": "sk-cluster"}
        ),
    )
    settings = LeaseSettings(namespace=NAMESPACE, ttl=timedelta(minutes=30))
    service = LeaseService(store, KubeSecrets(api), clock=system_clock, settings=settings)
    admission = Admission(store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    server = serve(
        admission, host="127.0.0.1", port=0, tls=None, mounted={PREFIX: lease_app(service)}
    )
    reconciler = kube_reconciler(
        api,
        store,
        LogEvents(),
        CollectorRegistry(),
        versions=store.informer.version,
        namespace=NAMESPACE,
    )
    try:
        yield Cluster(kubeconfig, server.port, store, reconciler, custom)
    finally:
        server.close()
        store.delete(KEY)
        for name in ("openai", "budgetops-agent-signing-key"):
            core.delete_namespaced_secret(name, NAMESPACE)
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        store.stop()
        api.close()


def test_an_agent_borrows_reports_and_releases_and_the_objects_record_it(
    cluster: Cluster,
) -> None:
    made = cluster.agent(
        "create", "--provider", "openai", "--provider-key-secret", "openai/api-key"
    )
    agent, token = made["agent"], made["token"]
    hello = {"ic_token": token, "requested_budget": 10, "runtime_version": "1.0.0",
             "runtime_id": "gateway-1"}  # fmt: skip
    eventually(lambda: agent in cluster.store.get(KEY).status.agents)  # type: ignore[union-attr]
    status, body, text = call(cluster.port, "POST", "/auth/handshake", hello)
    assert status == 200, text
    lease_id = body["lease_id"]
    key = sealing.open_sealed(
        body["ip_token"],
        identity_token=token,
        lease_id=lease_id,
        salt=base64.b64decode(body["key_salt"]),
    )
    assert key == "sk-cluster"
    records = [{"request_id": f"r{n}", "seq": n, "tokens": 10, "cost_usd": 1, "model": "gpt-4",
                "provider": "openai", "timestamp": 1} for n in (1, 2, 3)]  # fmt: skip
    for _ in range(2):  # the replay is counted once
        status, _, text = call(
            cluster.port, "POST", "/budget/report",
            {"lease_id": lease_id, "reports": records}, token=token,
        )  # fmt: skip
        assert status == 200, text
    account = cluster.spent(agent)
    assert (Decimal(account["spent"]), Decimal(account["leasedOut"])) == (3, 7)
    recorded = cluster.leases()[lease_id]
    assert recorded["spec"]["budgetRef"] == {
        "kind": "TrustBudget", "name": KEY.name, "account": agent,
    }  # fmt: skip
    assert recorded["spec"]["holder"]["id"] == "gateway-1"
    assert (recorded["status"]["phase"], recorded["status"]["spent"]) == ("Active", "3")
    status, _, text = call(
        cluster.port, "POST", "/budget/release", {"lease_id": lease_id}, token=token
    )
    assert status == 200, text
    assert cluster.leases()[lease_id]["status"]["phase"] == "Released"
    assert Decimal(cluster.spent(agent)["balance"]) == 97

    cluster.agent("revoke", agent)
    status, body, _ = call(cluster.port, "POST", "/auth/handshake", hello)
    assert (status, body["error"]["code"]) == (401, "INVALID_TOKEN")
    assert "revoked" in body["error"]["message"]
    # the revoked token may still report what was spent before its lease closed, no later
    late = {**records[0], "request_id": "r4", "seq": 4}
    after = {**late, "request_id": "r5", "seq": 5, "timestamp": 2**40}
    status, body, _ = call(
        cluster.port, "POST", "/budget/report", {"lease_id": lease_id, "reports": [after]},
        token=token,
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (409, "LEASE_CLOSED")
    status, body, text = call(
        cluster.port, "POST", "/budget/report", {"lease_id": lease_id, "reports": [late]},
        token=token,
    )  # fmt: skip
    assert (status, body["late"]) == (200, 1), text
    assert Decimal(cluster.spent(agent)["spent"]) == 4
    eventually(lambda: cluster.leases()[lease_id]["status"]["spent"] == "4")
    assert cluster.leases()[lease_id]["status"]["lateSpent"] == "1"


def test_an_agent_leases_up_to_its_own_allocation_and_a_change_applies_at_once(
    cluster: Cluster, budget_crds: Any
) -> None:
    """spec.agentAllocations through the API server: `agent create --allocation` and `agent
    set` patch it, a kubectl-style merge patch of the spec is taken on the next lease, the
    CRD's rules refuse it on a points budget, and informative allocations show progress."""
    made = cluster.agent(
        "create", "--provider", "openai", "--provider-key-secret", "openai/api-key",
        "--allocation", "15",
    )  # fmt: skip
    agent, token = made["agent"], made["token"]
    hello = {"ic_token": token, "requested_budget": 10, "runtime_version": "1.0.0"}
    budget = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "trustbudgets", KEY.name)
    assert budget["spec"]["agentAllocations"] == {agent: "15"}
    eventually(lambda: agent in cluster.store.get(KEY).status.agents)  # type: ignore[union-attr]

    def lend() -> tuple[int, Any]:
        status, body, _ = call(cluster.port, "POST", "/auth/handshake", hello)
        return status, body

    first = lend()[1]
    assert (first["budget_granted"], first["budget_remaining"]) == (10, 5)
    assert lend()[1]["budget_granted"] == 5
    status, body = lend()
    assert (status, body["error"]["code"]) == (403, "BUDGET_EXCEEDED")

    assert cluster.agent("set", agent, "--allocation", "40") == {
        "agent": f"{agent}: 25.00 of 40.00 USD left"
    }
    assert Decimal(cluster.spent(agent)["allocation"]) == 40  # at once, before any lease
    assert lend()[1]["budget_granted"] == 10

    # Applied as a user would, with no CLI: the next lease takes it.
    patch = {"spec": {"agentAllocations": {agent: "30"}}}
    cluster.custom.patch_cluster_custom_object(GROUP, VERSION, "trustbudgets", KEY.name, patch)
    status, body = lend()  # 25 lent of 30: 5 left
    assert (status, body["budget_granted"], body["budget_remaining"]) == (200, 5, 0)

    informative = {"total": "50", "providers": {"openai": "2"}}
    cluster.custom.patch_cluster_custom_object(
        GROUP, VERSION, "trustbudgets", KEY.name, {"spec": {"informativeAllocations": informative}}
    )
    record = {"request_id": "r1", "seq": 1, "tokens": 10, "cost_usd": 3, "model": "gpt-4",
              "provider": "openai", "timestamp": 1}  # fmt: skip
    lease_id = first["lease_id"]
    status, counted, text = call(
        cluster.port, "POST", "/budget/report", {"lease_id": lease_id, "reports": [record]},
        token=token,
    )  # fmt: skip
    assert (status, counted["accepted"]) == (200, 1), text  # past the provider's 2: not refused
    shares = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "trustbudgets", KEY.name)[
        "status"
    ]["spentBy"]["percentUsed"]
    assert shares == {"total": "6.0", "providers": {"openai": "150.0"}, "projects": {}}
    shown = subprocess.run(
        [str(budget_crds.binaries.kubectl), "budget", "status", KEY.name],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"{agent}: 0.00 of 30.00 USD left" in shown.stdout
    assert "total: spent 3.00 of 50.00 USD (6.0%, informative: never refused)" in shown.stdout
    assert "provider openai: spent 3.00 of 2.00 USD (150.0%" in shown.stdout

    for refused, message in (
        ({"unit": "points"}, "set unit: USD"),
        ({"agentAllocations": {"agent_" + "a" * 40: "5"}}, "at most 38 characters"),
        ({"informativeAllocations": {"projects": {"p" * 64: "5"}}}, "at most 63 characters"),
    ):
        with pytest.raises(client.ApiException) as error:
            cluster.custom.patch_cluster_custom_object(
                GROUP, VERSION, "trustbudgets", KEY.name, {"spec": refused}
            )
        assert error.value.status == 422
        assert message in error.value.body
