"""The real control plane, started once per test session (hack/control_plane.py).

When the binaries are not cached the cluster tests fail with the command that builds them;
a developer who wants to run only the rest sets BUDGETOPS_SKIP_CLUSTER=1 to skip them
instead. In CI (CI=true) they never skip.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT

HARNESS = ROOT / "hack" / "control_plane.py"


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("control_plane", HARNESS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["control_plane"] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def binaries() -> object:
    cached = harness.cached_binaries()
    if cached is None:
        message = (
            "the control-plane binaries are not built; run `python hack/control_plane.py build` "
            "(about 8 minutes the first time)"
        )
        if os.environ.get("BUDGETOPS_SKIP_CLUSTER") == "1" and os.environ.get("CI") != "true":
            pytest.skip(f"BUDGETOPS_SKIP_CLUSTER=1: {message}")
        pytest.fail(message)
    return cached


@pytest.fixture(scope="session")
def control_plane(binaries: object) -> Iterator[object]:
    with harness.ControlPlane(binaries) as plane:
        yield plane


@pytest.fixture(scope="session")
def budget_crds(control_plane: Any) -> Any:
    """The control plane with BudgetOps' CRDs applied and established, and the peering."""
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    control_plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=budgetops",
    )
    # Where `budgetops run` replicas elect the one that reconciles (they make it if missing).
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input="apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: budgetops\n",
    )
    return control_plane


CSR_CREATE = {
    "apiGroups": ["certificates.k8s.io"],
    "apiVersions": ["v1"],
    "resources": ["certificatesigningrequests"],
    "operations": ["CREATE"],
}
DEPLOYMENT_WRITES = {
    "apiGroups": ["apps"],
    "apiVersions": ["v1"],
    "resources": ["deployments"],
    "operations": ["CREATE", "UPDATE"],
}


def webhook_configuration(
    name: str, *, port: int, ca: bytes, rules: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration calling https://127.0.0.1:<port>/validate."""
    hook: dict[str, Any] = {
        "name": f"{name}.budgetops.dev",
        "clientConfig": {
            "url": f"https://127.0.0.1:{port}/validate",
            "caBundle": base64.b64encode(ca).decode(),
        },
        "rules": rules,
        "sideEffects": "NoneOnDryRun",
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        **extra,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [hook],
    }
