"""The chart lints, renders, installs into the real API server and grants what it says."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "budgetops"


def helm(binaries: Any, *args: str, kubeconfig: str | None = None) -> str:
    command = [str(binaries.helm), *args]
    if kubeconfig:
        command += ["--kubeconfig", kubeconfig]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_helm_is_the_pinned_version(binaries: Any) -> None:
    assert helm(binaries, "version", "--short").startswith("v3.22.0")


def test_chart_lints_strictly(binaries: Any) -> None:
    assert "0 chart(s) failed" in helm(binaries, "lint", "--strict", str(CHART))


def test_chart_renders_and_rejects_unknown_values(binaries: Any) -> None:
    rendered = [
        doc
        for doc in yaml.safe_load_all(
            helm(
                binaries,
                "template",
                "demo",
                str(CHART),
                "-n",
                "ops",
                "--set",
                "webhook.tls.caBundle=PEM",
            )
        )
        if doc
    ]
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ]
    [configuration] = [d for d in rendered if d["kind"] == "ValidatingWebhookConfiguration"]
    [hook] = configuration["webhooks"]
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert (hook["timeoutSeconds"], hook["failurePolicy"]) == (5, "Fail")
    assert hook["clientConfig"]["service"] == {
        "name": "demo-budgetops",
        "namespace": "ops",
        "path": "/validate",
        "port": 443,
    }
    conditions = " ".join(c["expression"] for c in hook["matchConditions"])
    assert "system:nodes" in conditions
    assert "system:serviceaccount:ops:budgetops" in conditions
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run"
    assert "--own-service-account=system:serviceaccount:ops:budgetops" in args
    wrong = subprocess.run(
        [str(binaries.helm), "template", "demo", str(CHART), "--set", "replica=3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
    assert "additional properties 'replica' not allowed" in wrong.stderr.lower()
    policy = subprocess.run(
        [
            str(binaries.helm),
            "template",
            "demo",
            str(CHART),
            "--set",
            "webhook.failurePolicy=Sometimes",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert policy.returncode != 0


def test_helm_install_grants_status_writes_to_the_operator(budget_crds: Any, binaries: Any) -> None:
    control_plane = budget_crds  # with the session's peering, which the install must keep
    kubeconfig = str(control_plane.kubeconfig)
    helm(
        binaries,
        "install",
        "budgetops",
        str(CHART),
        "-n",
        "budgetops",
        "--create-namespace",
        # No kubelet runs pods here, so nothing waits for the Deployment; and Ignore keeps
        # other tests' CSRs from waiting on a Service with no endpoints.
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.tls.caBundle=unused",
        # The session's other tests already run their own peering object; the chart's is
        # checked by the rendering test above.
        "--set",
        "reconciler.enabled=false",
        kubeconfig=kubeconfig,
    )
    operator = "system:serviceaccount:budgetops:budgetops"
    for verb, resource, subresource, expected in (
        ("update", "trustbudgets.budgetops.dev", "status", "yes"),
        ("update", "trustbudgets.budgetops.dev", "", "no"),
        ("watch", "riskbudgets.budgetops.dev", "", "yes"),
        ("delete", "trustbudgets.budgetops.dev", "", "no"),
        ("patch", "riskbudgets.budgetops.dev", "", "no"),  # status is replaced, never patched
        ("patch", "clusterkopfpeerings.kopf.dev", "", "yes"),
        ("get", "secrets", "", "yes"),
        ("list", "secrets", "", "no"),
        ("create", "budgetleases.budgetops.dev", "", "yes"),
        ("patch", "budgetleases.budgetops.dev", "status", "yes"),
        ("update", "budgetleases.budgetops.dev", "", "no"),
    ):
        answer = control_plane.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            f"--subresource={subresource}",
            "--as",
            operator,
            check=False,
        ).stdout.strip()
        assert answer == expected, f"{verb} {resource} {subresource}: {answer}"
    # The keys are created, and verdicts kept, in the release's namespace, and only there.
    for verb, resource, namespace, expected in (
        ("create", "secrets", "budgetops", "yes"),
        ("create", "secrets", "default", "no"),
        ("update", "secrets", "budgetops", "no"),
        ("update", "configmaps", "budgetops", "yes"),
        ("create", "configmaps", "default", "no"),
        ("delete", "configmaps", "budgetops", "no"),
    ):
        answer = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", namespace, "--as", operator, check=False
        ).stdout.strip()
        assert answer == expected, f"{verb} {resource} -n {namespace}: {answer}"
    crds = control_plane.kubectl("get", "crd", "-o", "name").stdout
    assert "trustbudgets.budgetops.dev" in crds
    assert (
        "clusterkopfpeering.kopf.dev/budgetops"
        in control_plane.kubectl("get", "clusterkopfpeering", "-o", "name").stdout
    )
    helm(binaries, "uninstall", "budgetops", "-n", "budgetops", "--wait", kubeconfig=kubeconfig)
