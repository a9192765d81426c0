"""A control plane with one real node (hack/node.py), started once per test session.

Pods run for real: containerd, runc, a CNI bridge in a network namespace of the node's own,
kubelet and kube-scheduler. When something is not installed or built the node tests fail with
the command that prepares it; like the cluster tests they skip instead only when asked to with
BUDGETOPS_SKIP_CLUSTER=1, and never in CI. They carry the `cluster` and `node` markers, so
`-m "not node"` leaves them out.

Fixtures: `node_cluster` (a hack/node.py NodeCluster: kubectl(), kubeconfig, import_image()),
and `node_image`, the BudgetOps image built by hack/image.sh and imported into the node, named
`budgetops:test` for pod specs.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.image.conftest import (
    TAG,
    Image,
    image,  # noqa: F401  (the fixture: hack/image.sh, once)
)

sys.path.insert(0, str(ROOT / "hack"))  # hack/node.py, and the control_plane.py it imports
node = importlib.import_module("node")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node: runs real pods on hack/node.py's node")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[Any]:
    try:
        cluster = node.NodeCluster()
    except node.NodeError as error:  # not installed or built: says what to run
        # The cluster tests' opt-out, and like theirs never in CI.
        if os.environ.get("BUDGETOPS_SKIP_CLUSTER") == "1" and os.environ.get("CI") != "true":
            pytest.skip(f"BUDGETOPS_SKIP_CLUSTER=1: {error}")
        pytest.fail(str(error), pytrace=False)
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def node_image(node_cluster: Any, image: Image) -> str:  # noqa: F811
    """The BudgetOps image, in the node as `budgetops:test` (pods may also say its id)."""
    node_cluster.import_image(TAG)
    return TAG
