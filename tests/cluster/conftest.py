"""The real control plane, started once per test session (hack/control_plane.py).

When the binaries are not cached the cluster tests fail with the command that builds them;
a developer who wants to run only the rest sets BUDGETOPS_SKIP_CLUSTER=1 to skip them
instead. In CI (CI=true) they never skip.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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
