"""`kubectl budget ...` as a user runs it: the real kubectl finds the `kubectl-budget` plugin
on PATH and the plugin works on the cluster of $KUBECONFIG; every command, its output and
its exit code, including a clear error for a budget or a cluster that does not exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubeconfigs import unreachable as unreachable_kubeconfig

NAMESPACE = "plugin-shop"
SERVICE = "plugin-api"


@pytest.fixture(scope="module")
def kubectl_budget(budget_crds: Any) -> Any:
    """Run `kubectl budget ARGS` with the plugin on PATH; returns (exit code, stdout)."""
    control_plane = budget_crds
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    for document in (
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "RiskBudget",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"serviceId": SERVICE, "tier": 1},
        },
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "TrustBudget",
            "metadata": {"name": "plugin-certs"},
            "spec": {
                "subjects": {"users": ["nobody-here"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 3,
            },
        },
    ):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(document))
    plugin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(control_plane.kubeconfig),
    }

    def run(*args: str, kubeconfig: str | None = None) -> tuple[int, str]:
        done = subprocess.run(
            [str(control_plane.binaries.kubectl), "budget", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env if kubeconfig is None else {**env, "KUBECONFIG": kubeconfig},
        )
        return done.returncode, done.stdout + done.stderr

    yield run
    control_plane.kubectl("delete", "tb", "plugin-certs", "--wait=false", check=False)
    control_plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_kubectl_finds_the_plugin(kubectl_budget: Any) -> None:
    code, out = kubectl_budget("--version")
    assert (code, out.strip()) == (0, "kubectl budget 0.1.0")


def test_consume_status_check_and_list(kubectl_budget: Any) -> None:
    code, out = kubectl_budget(
        "consume", "--service", SERVICE, "--points", "90", "--reason", "Release v1.2.3",
        "--release-id", "v1.2.3", "-n", NAMESPACE,
    )  # fmt: skip
    assert code == 0, out
    assert f"Risk budget {SERVICE}: 90 RP (standard), now 90 / 200 RP (45.0%)" in out
    code, out = kubectl_budget("status", "--service", SERVICE)
    assert code == 0, out
    assert "Status: Yellow" in out
    assert "Budget: 90 / 200 RP (45.0%)\n█████████░░░░░░░░░░░\nRemaining: 110 RP" in out
    code, out = kubectl_budget("check", "--service", SERVICE, "--points", "500")
    assert code == 1
    assert "may ship: no" in out
    code, out = kubectl_budget("list", "--status", "Yellow,Red", "-o", "json")
    assert code == 0, out
    assert [(r["service"], r["status"]) for r in json.loads(out)] == [(SERVICE, "Yellow")]
    code, out = kubectl_budget("list", "-o", "yaml")
    assert {r["name"] for r in yaml.safe_load(out)} >= {SERVICE, "plugin-certs"}


def test_adjust_report_metrics_history_receipts(kubectl_budget: Any, budget_crds: Any) -> None:
    code, out = kubectl_budget(
        "adjust", "--service", SERVICE, "--by", "20", "--reason", "earned capacity"
    )
    assert code == 0, out
    assert "allocation now 220 RP" in out
    code, out = kubectl_budget(
        "report-metrics", "--service", SERVICE, "--mttr-hours", "24", "--change-failure-rate", "8"
    )
    assert code == 0, out
    live = json.loads(
        budget_crds.kubectl("get", "rb", SERVICE, "-n", NAMESPACE, "-o", "json").stdout
    )["status"]
    assert live["reliability"] == {
        "mttrHours": "24",
        "changeFailureRatePercent": "8",
        "p1Incidents": 0,
    }
    assert live["allocation"] == 220
    code, out = kubectl_budget("history", "--service", SERVICE, "-o", "json")
    assert code == 0, out
    [current] = json.loads(out)
    assert current["current"] is True
    code, out = kubectl_budget("receipts", "--service", SERVICE)
    assert code == 0, out
    assert "Release v1.2.3" in out.splitlines()[1]


def test_leases_verdict_and_errors(kubectl_budget: Any, tmp_path: Path) -> None:
    code, out = kubectl_budget("leases")
    assert code == 0, out
    assert out.split()[:3] == ["NAME", "BUDGET", "ACCOUNT"]
    code, out = kubectl_budget("verdict", "deployment/none", "-n", NAMESPACE)
    assert (code, out.strip()) == (
        2,
        "no verdict on deployment/none in the budgets' entries or kept verdicts",
    )
    code, out = kubectl_budget("status", "--service", "no-such-service")
    assert code == 2
    assert (
        "not found: no RiskBudget for service no-such-service (load it with `kubectl apply -f`)"
        in out
    )
    code, out = kubectl_budget("status", "no-such-budget")
    assert code == 2
    assert "TrustBudget/no-such-budget" in out
    unreachable = unreachable_kubeconfig(tmp_path)
    code, out = kubectl_budget("list", kubeconfig=str(unreachable))
    assert code == 4
    assert "cannot reach the cluster" in out


def test_charge_a_trust_budget_until_denied(kubectl_budget: Any) -> None:
    for uid in ("c1", "c2", "c3"):
        code, out = kubectl_budget(
            "charge", "plugin-certs", "--account", "user:nobody-here", "--id", uid
        )
        assert code == 0, out
    code, out = kubectl_budget(
        "charge", "plugin-certs", "--account", "user:nobody-here", "--id", "c4"
    )
    assert code == 1
    assert (
        "denied: TrustBudget/plugin-certs: Trust budget exhausted. "
        "This request requires 1 points; 0 remain." in out
    )
    code, out = kubectl_budget("status", "plugin-certs", "-o", "json")
    assert [(r["account"], r["balance"], r["status"]) for r in json.loads(out)] == [
        ("user:nobody-here", "0", "Exhausted")
    ]


def test_verify_holds_a_log_against_the_cluster_heads(kubectl_budget: Any, tmp_path: Path) -> None:
    """`kubectl budget verify --audit`: the budgets' heads come from the cluster, so a log
    that lacks their records is reported, naming the chain."""
    kubectl_budget("consume", "--service", SERVICE, "--points", "1", "-n", NAMESPACE)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out = kubectl_budget(
        "verify", "--audit", str(empty), "--budget", f"RiskBudget/{NAMESPACE}/{SERVICE}",
        "--public-key", str(_public_key(tmp_path)),
    )  # fmt: skip
    assert code == 1, out
    assert f"BROKEN: line 0: RiskBudget/{NAMESPACE}/{SERVICE}: the log ends at no record" in out


def _public_key(folder: Path) -> Path:
    from budgetops.crypto import dsse

    path = folder / "key.pem"
    path.write_bytes(dsse.SigningKey.generate().public.to_pem())
    return path


def test_context_state_filter_and_where_budgetops_runs(
    kubectl_budget: Any, budget_crds: Any
) -> None:
    """`--context` as kubectl takes it; `--status` refuses a state that does not exist; and
    without `--operator-namespace` the plugin finds BudgetOps' namespace from the Service
    its webhook configuration calls (before: budgetops-system, wherever it ran)."""
    control_plane = budget_crds
    context = yaml.safe_load(control_plane.kubeconfig.read_text())["current-context"]
    code, out = kubectl_budget("list", "--context", context)
    assert code == 0, out
    assert SERVICE in out
    code, out = kubectl_budget("list", "--context", "no-such-context")
    assert code == 4
    assert out.startswith("error: cannot use the kubeconfig")
    code, out = kubectl_budget("list", "--status", "Purple")
    assert code == 2
    assert out.strip().splitlines() == [
        "invalid: --status purple: not a state; give some of Green, Yellow, Red, Exhausted, OK, Low"
    ]
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "plugin-budgetops", "labels": {"app.kubernetes.io/name": "budgetops"}},
        "webhooks": [
            {
                "name": "charge.budgetops.dev",
                "clientConfig": {"service": {"name": "budgetops", "namespace": "plugin-ops"}},
                "rules": [],  # routes nothing: only where BudgetOps runs is read from it
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Ignore",
            }
        ],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    try:
        code, out = kubectl_budget("keys", "list")
        assert code == 2
        assert "secret plugin-ops/budgetops-verdict-keys" in out, out
    finally:
        control_plane.kubectl("delete", "validatingwebhookconfiguration", "plugin-budgetops")
