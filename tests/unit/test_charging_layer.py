"""The charge is defined once: `usecases/charging.py` is the only operator module that decides
a charge (`admit_trust`, `admit_risk`), and only the use cases change a status.
(import-linter keeps the imports; this keeps the calls.)"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "operator" / "budgetops"
CHARGING = PACKAGE / "usecases" / "charging.py"


def _calls(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_only_the_charging_service_decides_a_charge() -> None:
    deciding = [
        call
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != CHARGING
        for call in _calls(path, {"admit_trust", "admit_risk"})
    ]
    assert deciding == []
    assert _calls(CHARGING, {"admit_trust", "admit_risk"})


def test_only_the_use_cases_change_a_status() -> None:
    """The entry points (admission, the lease API, reconciling, the CLI) write through the use
    cases (charging, leasing, reconciling, administering), which do; the stores define it."""
    writes = [
        call
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name not in ("usecases", "store")
        for call in _calls(path, {"update_status", "update_status_async"})
    ]
    assert writes == []
    for use_case in ("charging.py", "leasing.py", "reconciling.py", "administering.py"):
        assert _calls(PACKAGE / "usecases" / use_case, {"update_status", "update_status_async"})
