"""Through the real API server: a Deployment admitted under a RiskBudget gets a signed
verdict, discoverable from the workload (`budgetops verdict`), which verifies; a change to
the budget afterwards is reported as drift; the operator's stdout is a verifiable chain."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import DEPLOYMENT_WRITES, webhook_configuration
from tests.cluster.test_incluster_admission import _wait_healthy, budgetops_run
from tests.ports import free_port
from tests.tls import loopback_server_pair

OPERATOR_NAMESPACE = "verdicts-operator"
NAMESPACE = "verdicts-shop"
HOOK = "budgetops-verdicts"


def budgetops(control_plane: Any, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it against the cluster."""
    cluster = (
        *("--kubeconfig", str(control_plane.kubeconfig)),
        *("--operator-namespace", OPERATOR_NAMESPACE),
    )
    return subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *args, *cluster],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def deployment(points: int, *, namespace: str = NAMESPACE, tag: str = "") -> dict[str, Any]:
    """Deployment `api` declaring `points`, its image `shop/api:TAG` (the points if no tag)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "api",
            "namespace": namespace,
            "labels": {"app": "api"},
            "annotations": {"budgetops.dev/risk-points": str(points)},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": f"shop/api:{tag or points}"}]},
            },
        },
    }


def risk_budget(allocation: int) -> dict[str, Any]:
    return {
        "apiVersion": "budgetops.dev/v1alpha1",
        "kind": "RiskBudget",
        "metadata": {"name": "shop-api", "namespace": NAMESPACE},
        "spec": {
            "serviceId": "shop-api",
            "allocation": allocation,
            "selector": {"matchLabels": {"app": "api"}},
        },
    }


@contextmanager
def admission_replica(
    control_plane: Any,
    folder: Path,
    *,
    hook: str,
    namespace: str,
    rules: Sequence[dict[str, Any]] = (DEPLOYMENT_WRITES,),
) -> Iterator[Path]:
    """One `budgetops run` replica (admission only, its keys in OPERATOR_NAMESPACE) behind a
    webhook for `rules` (Deployments) in `namespace` (cluster-scoped objects all match);
    yields its stdout, the audit trail."""
    ca, serving = loopback_server_pair(folder)
    port = free_port()
    trail = folder / "stdout.jsonl"
    command = budgetops_run(
        control_plane.kubeconfig, port, serving, "--no-reconcile", "--namespace", OPERATOR_NAMESPACE
    )
    with trail.open("wb") as out, (folder / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            _wait_healthy(port, ca.cert)
            configuration = webhook_configuration(
                hook,
                port=port,
                ca=ca.cert.read_bytes(),
                rules=list(rules),
                namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            )
            control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
            yield trail
        finally:
            control_plane.kubectl("delete", "validatingwebhookconfiguration", hook, check=False)
            control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            process.terminate()
            process.wait(timeout=15)
    assert process.returncode == 0, (folder / "stderr.log").read_text()[-2000:]


@pytest.fixture(scope="module")
def operator(budget_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One replica whose stdout is the audit trail."""
    control_plane = budget_crds
    for namespace in (OPERATOR_NAMESPACE, NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(risk_budget(50)))
    folder = tmp_path_factory.mktemp("verdicts")
    with admission_replica(control_plane, folder, hook=HOOK, namespace=NAMESPACE) as trail:
        yield trail


def fetch_envelope(control_plane: Any) -> str:
    """`budgetops verdict deployment/api -o json`, once the ConfigMap has been written."""
    deadline = time.monotonic() + 20
    while True:
        shown = budgetops(control_plane, "verdict", "deployment/api", "-n", NAMESPACE, "-o", "json")
        if shown.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return shown.stdout


def test_an_admitted_deployment_has_a_verdict_that_verifies_then_drifts(
    operator: Path, budget_crds: Any
) -> None:
    control_plane = budget_crds
    applied = control_plane.kubectl("apply", "-f", "-", input=json.dumps(deployment(5)))
    assert "Risk budget shop-api: 5 RP" in applied.stderr, applied.stderr
    described = budgetops(control_plane, "verdict", "deployment/api", "-n", NAMESPACE)
    assert described.returncode == 0, described.stdout + described.stderr
    digest = described.stdout.splitlines()[0]
    assert digest.startswith("sha256:")
    entries = json.loads(
        control_plane.kubectl("get", "rb", "shop-api", "-n", NAMESPACE, "-o", "json").stdout
    )["status"]["entries"]
    assert entries[-1]["verdict"] == digest, "the digest is on the budget's entry"

    envelope = fetch_envelope(control_plane)
    verified = budgetops(control_plane, "verify", "-", stdin=envelope)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified: {digest}" in verified.stdout
    assert "configuration unchanged" in verified.stdout

    tampered = json.loads(envelope)
    payload = bytearray(base64.b64decode(tampered["payload"]))
    payload[payload.index(b'"allowed":true') + 10] ^= 0x20  # true -> True
    tampered["payload"] = base64.b64encode(bytes(payload)).decode()
    refused = budgetops(control_plane, "verify", "-", stdin=json.dumps(tampered))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "NOT VERIFIED" in refused.stdout

    control_plane.kubectl("apply", "-f", "-", input=json.dumps(risk_budget(80)))
    deadline = time.monotonic() + 10
    while True:
        drifted = budgetops(control_plane, "verify", "-", stdin=envelope)
        if drifted.returncode == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert drifted.returncode == 3, drifted.stdout + drifted.stderr
    assert "drift: the configuration changed since" in drifted.stdout


def test_a_denial_is_attested_and_the_stdout_trail_verifies(
    operator: Path, budget_crds: Any
) -> None:
    control_plane = budget_crds
    refused = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(deployment(500)), check=False
    )
    assert refused.returncode != 0
    assert "cannot cover this release" in refused.stderr
    budget = json.loads(
        control_plane.kubectl("get", "rb", "shop-api", "-n", NAMESPACE, "-o", "json").stdout
    )
    assert budget["status"]["entries"][-1]["action"] == "deny"
    head = budget["status"]["auditHead"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = [
            json.loads(line) for line in operator.read_text().splitlines() if '"prev"' in line
        ]
        mine = [r for r in records if r["budget"] == f"RiskBudget/{NAMESPACE}/shop-api"]
        if mine and mine[-1]["seq"] == head["seq"]:
            break
        time.sleep(0.2)
    assert mine[-1]["hash"] == head["hash"]
    assert "decision" in [r["action"] for r in mine]
    for line in operator.read_text().splitlines():  # a log pipeline takes every line
        assert isinstance(json.loads(line), dict), line
    checked = budgetops(
        control_plane,
        "verify",
        "--audit",
        str(operator),
        "--budget",
        f"RiskBudget/{NAMESPACE}/shop-api",
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audit trail verified" in checked.stdout
    cut = operator.with_name("cut.jsonl")
    lines = operator.read_text().splitlines()
    last = max(n for n, line in enumerate(lines) if '"prev"' in line)  # the last record
    cut.write_text("".join(line + "\n" for n, line in enumerate(lines) if n != last))
    broken = budgetops(
        control_plane, "verify", "--audit", str(cut), "--budget", f"RiskBudget/{NAMESPACE}/shop-api"
    )
    assert broken.returncode == 1, broken.stdout
    assert "are missing" in broken.stdout
