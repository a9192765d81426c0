"""A BudgetLease is a record BudgetOps writes of a lease: `budgetops apply` refuses one, as
the chart's policy does in a cluster (tests/cluster/test_budgetlease_policy_incluster.py),
and the examples to apply hold none."""

from __future__ import annotations

from pathlib import Path

from budgetops.cli.commands import EXIT_INVALID
from tests.conftest import EXAMPLES

from .test_cli import run

RECORD = EXAMPLES / "records" / "budgetlease-llm.yaml"


def test_apply_refuses_a_budgetlease_and_writes_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.sqlite3")
    both = tmp_path / "manifests"
    both.mkdir()
    for path in (EXAMPLES / "trustbudget-llm-spend.yaml", RECORD):
        (both / path.name).write_text(path.read_text())
    code, out = run("apply", "-f", str(both), "--db", db)
    assert code == EXIT_INVALID
    assert out.startswith("invalid: BudgetLease/payments/agent-runtime-lease: a BudgetLease is ")
    assert "lease API (POST /api/v1/auth/handshake" in out
    assert "TrustBudget/agent-llm-spend applied" not in out, "not even the budget beside it"
    assert run("validate", "-f", str(RECORD))[0] == 0, "its shape is still checked"


def test_the_examples_to_apply_hold_no_budgetlease(tmp_path: Path) -> None:
    code, out = run("apply", "-f", str(EXAMPLES), "--db", str(tmp_path / "ledger.sqlite3"))
    assert code == 0, out
    assert "BudgetLease" not in out
