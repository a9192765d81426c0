"""The tier table in a cluster: the chart's ValidatingAdmissionPolicy refuses a RiskBudget
naming a tier the table lacks, and `budgetops run --tiers FILE` sizes windows by the file it
reads at start and again when it changes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from budgetops.apis.tiers import BUILT_IN, TierTable
from tests.ports import free_port
from tests.tls import loopback_server_pair

from .test_chart_e2e import _budgetops
from .test_helm import CHART, one, refusal, render
from .test_incluster_admission import _wait_healthy, budgetops_run

BATCH = {"name": "Batch", "allocation": 500}


def _risk_budget(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "RiskBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"serviceId": name, **spec},
        }
    )


def _allocation(control_plane: Any, name: str, within: float = 30.0) -> str:
    """The allocation the operator opened `name`'s window with, once it has one."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = control_plane.kubectl(
            "get", "rb", name, "-n", "default", "-o", "jsonpath={.status.allocation}"
        ).stdout
        if found:
            return str(found)
        time.sleep(0.2)
    raise AssertionError(f"{name} never had a window opened")


def test_the_policy_refuses_a_tier_the_table_lacks(budget_crds: Any, binaries: Any) -> None:
    control_plane = budget_crds
    rendered = subprocess.run(
        [
            *(str(binaries.helm), "template", "tiers", str(CHART), "-n", "budgetops"),
            *("-s", "templates/tiers.yaml"),
            *("--set-json", f"riskBudgetTiers.tiers.5={json.dumps(BATCH)}"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    control_plane.kubectl("create", "namespace", "budgetops", check=False)
    control_plane.kubectl("apply", "-f", "-", input=rendered)
    try:
        deadline = time.monotonic() + 20  # a new policy takes a moment to be enforced
        while True:
            refused = control_plane.kubectl(
                "apply", "-f", "-", input=_risk_budget("typo-tier", tier=7), check=False
            )
            if refused.returncode != 0 or time.monotonic() > deadline:
                break
            control_plane.kubectl("delete", "rb", "typo-tier", "-n", "default")
            time.sleep(0.2)
        assert refused.returncode != 0, "a tier missing from the table was admitted"
        assert (
            "spec.tier: tier 7 is not in the tier table (tiers 0, 1, 2, 3, 5; "
            "ConfigMap budgetops/tiers-budgetops-tiers)"
        ) in refused.stderr
        for name, spec in (
            ("batch-tier", {"tier": 5}),
            ("sized-by-hand", {"tier": 7, "allocation": 42}),
            ("default-tier", {}),
        ):
            control_plane.kubectl("apply", "-f", "-", input=_risk_budget(name, **spec))
            control_plane.kubectl("delete", "rb", name, "-n", "default", "--wait=false")
    finally:
        control_plane.kubectl("delete", "-f", "-", "--wait=false", input=rendered, check=False)


def test_the_operator_reads_the_table_at_start_and_when_it_changes(
    budget_crds: Any, tmp_path: Path
) -> None:
    control_plane = budget_crds
    table = tmp_path / "tiers.yaml"
    table.write_text("defaultTier: 5\ntiers:\n  5: {name: Batch, allocation: 500}\n")
    ca, serving = loopback_server_pair(tmp_path)
    port = free_port()
    with (tmp_path / "operator.log").open("wb") as log:
        process = subprocess.Popen(
            budgetops_run(
                control_plane.kubeconfig, port, serving, "--no-peering", "--tiers", str(table)
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_healthy(port, ca.cert)
            control_plane.kubectl("apply", "-f", "-", input=_risk_budget("tier-five", tier=5))
            control_plane.kubectl("apply", "-f", "-", input=_risk_budget("tier-default"))
            assert _allocation(control_plane, "tier-five") == "500"
            assert _allocation(control_plane, "tier-default") == "500"
            # A bad edit keeps the table in force; a good one applies, without a restart.
            table.write_text("tiers: {5: {name: Batch, allocation: 0}}\n")
            _logged(tmp_path / "operator.log", b"kept the tier table in force")
            table.write_text("defaultTier: 5\ntiers:\n  5: {name: Batch, allocation: 650}\n")
            _logged(tmp_path / "operator.log", b"applied: tiers 5")
            control_plane.kubectl("apply", "-f", "-", input=_risk_budget("tier-five-later", tier=5))
            assert _allocation(control_plane, "tier-five-later") == "650"
            assert _allocation(control_plane, "tier-five") == "500", "an open window keeps it"
        finally:
            process.terminate()
            process.wait(timeout=15)
            for name in ("tier-five", "tier-default", "tier-five-later"):
                control_plane.kubectl("delete", "rb", name, "-n", "default", "--wait=false")
    logged = (tmp_path / "operator.log").read_text()
    assert process.returncode == 0, logged[-2000:]


def _logged(log: Path, line: bytes, within: float = 20.0) -> None:
    """Wait for the operator to say `line`: it looks at the file every two seconds."""
    deadline = time.monotonic() + within
    while line not in log.read_bytes():
        assert time.monotonic() < deadline, f"never logged {line!r}"
        time.sleep(0.2)


def test_the_chart_renders_one_table_that_the_pods_mount_and_read(binaries: Any) -> None:
    rendered = render(binaries, **{"riskBudgetTiers__tiers__0": None})
    [table] = [d for d in rendered if d["kind"] == "ConfigMap" and "tiers.yaml" in d["data"]]
    read = TierTable.model_validate(yaml.safe_load(table["data"]["tiers.yaml"]))
    assert table["metadata"]["labels"]["budgetops.dev/tier-table"] == "true"  # kubectl budget
    assert read.tiers == {n: t for n, t in BUILT_IN.tiers.items() if n}, "null drops tier 0"
    assert read.default_tier == 1
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "--tiers=/etc/budgetops/tiers/tiers.yaml" in container["args"]
    assert {"name": "tiers", "mountPath": "/etc/budgetops/tiers", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "tiers", "configMap": {"name": table["metadata"]["name"]}} in pod["volumes"]
    assert "subPath" not in str(container["volumeMounts"]), "a subPath mount never updates"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["riskBudgetTiers.defaultTier=7"], "riskBudgetTiers.defaultTier 7 is not in"),
        (["riskBudgetTiers.tiers.1.allocation=0"], "minimum"),
        (["riskBudgetTiers.tiers.100.name=x", "riskBudgetTiers.tiers.100.allocation=5"], "100"),
    ],
)
def test_the_chart_refuses_a_bad_table_before_anything_changes(
    binaries: Any, values: list[str], says: str
) -> None:
    assert says in refusal(binaries, *values)


def test_kubectl_budget_sizes_a_window_by_the_operators_table(budget_crds: Any) -> None:
    """A window `kubectl budget consume` opens itself is sized as the operator would size it:
    by the chart's ConfigMap, found by its label in the operator's namespace."""
    control_plane = budget_crds
    control_plane.kubectl("create", "namespace", "tier-ops", check=False)
    table = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "ops-budgetops-tiers",
            "namespace": "tier-ops",
            "labels": {"budgetops.dev/tier-table": "true"},
        },
        "data": {"tiers.yaml": "tiers:\n  7: {name: Nightly, allocation: 700}\n"},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(table))
    control_plane.kubectl("apply", "-f", "-", input=_risk_budget("nightly", tier=7))
    cli = ("--kubeconfig", str(control_plane.kubeconfig), "--operator-namespace", "tier-ops")
    try:
        consumed = _budgetops("consume", "--service", "nightly", "-n", "default",
                              "--points", "7", *cli)  # fmt: skip
        assert consumed.returncode == 0, consumed.stdout + consumed.stderr
        assert _allocation(control_plane, "nightly") == "700"
        shown = _budgetops("status", "--service", "nightly", "-n", "default", *cli)
        assert "Tier: Nightly (7)" in shown.stdout, shown.stdout + shown.stderr
        table["data"] = {"tiers.yaml": "tiers: {7: {name: Nightly, allocation: 0}}\n"}
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(table))
        control_plane.kubectl("apply", "-f", "-", input=_risk_budget("nightly-two", tier=7))
        refused = _budgetops("consume", "--service", "nightly-two", "-n", "default",
                             "--points", "7", *cli)  # fmt: skip
        assert refused.returncode == 2
        assert "warning: tier table ConfigMap tier-ops/ops-budgetops-tiers: tiers[7]" in (
            refused.stderr
        )
        assert "tier 7 is not in the tier table (tiers 0, 1, 2, 3)" in refused.stdout
    finally:
        for name in ("nightly", "nightly-two"):
            control_plane.kubectl("delete", "rb", name, "-n", "default", "--wait=false")
        control_plane.kubectl("delete", "namespace", "tier-ops", "--wait=false")
