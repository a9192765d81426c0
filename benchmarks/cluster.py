"""The test control plane (`hack/control_plane.py`), loaded by path for the benchmarks."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_harness() -> Any:
    """The harness module: `cached_binaries()` and `ControlPlane`."""
    spec = importlib.util.spec_from_file_location("control_plane", ROOT / "hack/control_plane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["control_plane"] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def control_plane() -> Iterator[Any]:
    """A started control plane with BudgetOps' CRDs applied and established."""
    harness = load_harness()
    binaries = harness.cached_binaries()
    if binaries is None:
        raise SystemExit("build the control plane first: python hack/control_plane.py build")
    with harness.ControlPlane(binaries) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield plane
