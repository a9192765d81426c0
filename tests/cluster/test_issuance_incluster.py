"""`kubectl budget charge` and `kubectl budget check BUDGET --account A` against the real API
server: the receipt block, "may I issue?" answered without a write, and the calm denial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BUDGET = "issuance-check"


@pytest.fixture(scope="module")
def kubectl_budget(budget_crds: Any) -> Iterator[Any]:
    """`kubectl budget ARGS` with the plugin on PATH: (exit code, stdout, stderr)."""
    control_plane = budget_crds
    budget = {
        "apiVersion": "budgetops.dev/v1alpha1",
        "kind": "TrustBudget",
        "metadata": {"name": BUDGET},
        "spec": {
            "subjects": {"users": ["alice"]},
            "match": [{"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}],
            "initialBalance": 2,
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(budget))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(control_plane.kubeconfig),
    }

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [str(control_plane.binaries.kubectl), "budget", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        return done.returncode, done.stdout, done.stderr

    yield run
    control_plane.kubectl("delete", "tb", BUDGET, "--wait=false", check=False)


def _version(control_plane: Any) -> str:
    return str(
        control_plane.kubectl(
            "get", "tb", BUDGET, "-o", "jsonpath={.metadata.resourceVersion}"
        ).stdout
    )


def test_check_asks_may_i_issue_and_writes_nothing(budget_crds: Any, kubectl_budget: Any) -> None:
    before = _version(budget_crds)
    code, out, err = kubectl_budget("check", BUDGET, "--account", "user:alice")
    assert code == 0, out + err
    assert out.startswith("may issue: yes\n--- Trust Budget Receipt ---\nBudget ID: user:alice\n")
    assert "Cost: 1 points\nRemaining: 1 points\n" in out
    code, out, err = kubectl_budget("check", BUDGET, "--account", "user:alice", "--cost", "3")
    assert code == 1
    assert out.startswith(
        f"may issue: no\ndenied: TrustBudget/{BUDGET}: Trust budget exhausted. This request "
        "requires 3 points; 2 remain."
    )
    assert _version(budget_crds) == before, "a check never writes the budget"


def test_charge_answers_with_the_receipt_and_check_follows_the_balance(
    kubectl_budget: Any,
) -> None:
    code, out, err = kubectl_budget("charge", BUDGET, "--account", "user:bob", "--id", "csr-1")
    assert code == 0, out + err
    assert out.splitlines()[:4] == [
        "--- Trust Budget Receipt ---",
        "Budget ID: user:bob",
        "Cost: 1 points",
        "Remaining: 1 points",
    ]
    kubectl_budget("charge", BUDGET, "--account", "user:bob", "--id", "csr-2")
    code, out, err = kubectl_budget("check", BUDGET, "--account", "user:bob")
    assert code == 1, out + err
    assert "This request requires 1 points; 0 remain." in out
