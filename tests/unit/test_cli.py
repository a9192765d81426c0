"""The budgetops command line, end to end on a temporary embedded ledger."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from budgetops.cli.budgets import EXIT_DENIED
from budgetops.cli.commands import EXIT_INVALID
from budgetops.cli.main import main
from tests.conftest import EXAMPLES, ROOT


def run(*argv: str, plugin: bool = False) -> tuple[int, str]:
    """`budgetops ARGV` (or `kubectl budget ARGV`) in-process: its exit code and output."""
    out = io.StringIO()
    code = main(list(argv), out=out, plugin=plugin)
    return code, out.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger.sqlite3")
    assert run("apply", "-f", str(EXAMPLES), "--db", path)[0] == 0
    return path


def test_validate_reports_every_field_error_with_its_file() -> None:
    code, out = run("validate", "-f", str(EXAMPLES / "invalid"))
    assert code == EXIT_INVALID
    assert "negative-cost.yaml: spec.cost:" in out
    assert "unknown-field.yaml: spec.costPerIssuance: unknown field" in out
    assert out.count("invalid: ") == len(list((EXAMPLES / "invalid").glob("*.yaml")))


def test_validate_accepts_the_examples() -> None:
    code, out = run("validate", "-f", str(EXAMPLES))
    assert code == 0
    assert "valid: TrustBudget/developer-certificates" in out


def test_charge_until_denied_then_status(db: str) -> None:
    for uid in ("a", "b"):
        code, out = run(
            "charge",
            "agent-llm-spend",
            "--account",
            "serviceaccount:payments/agent",
            "--id",
            uid,
            "--cost",
            "50.00",
            "--db",
            db,
        )
        assert code == 0, out
    code, out = run(
        "charge",
        "agent-llm-spend",
        "--account",
        "serviceaccount:payments/agent",
        "--id",
        "c",
        "--cost",
        "0.01",
        "--db",
        db,
    )
    assert code == EXIT_DENIED
    assert (
        "denied: TrustBudget/agent-llm-spend: Trust budget exhausted. "
        "This request requires 0.01 USD; 0.00 remain."
    ) in out
    code, out = run("status", "--db", db)
    assert "serviceaccount:payments/agent: balance 0.00 of 100.00, spent 100.00" in out


def test_consume_and_dry_run(db: str) -> None:
    args = ("consume", "payments-api", "-n", "payments", "--db", db)
    code, out = run(*args, "--points", "100", "--release-id", "v1", "--dry-run")
    assert code == 0
    assert "dry run" in out
    code, out = run(*args, "--points", "100", "--release-id", "v1")
    assert "band Red" in out
    code, out = run(*args, "--points", "10", "--release-id", "v2")
    assert code == EXIT_DENIED
    assert "In Red only low-risk, security-fix, incident changes may ship" in out


def test_unknown_budget_and_bad_amount_are_clear(db: str) -> None:
    code, out = run("charge", "nope", "--account", "user:a", "--id", "x", "--db", db)
    assert (code, out) == (
        EXIT_INVALID,
        "not found: TrustBudget/nope (load it with `budgetops apply -f`)\n",
    )
    code, out = run(
        "charge",
        "developer-certificates",
        "--account",
        "user:a",
        "--id",
        "x",
        "--cost",
        "1.0000005",
        "--db",
        db,
    )
    assert code == EXIT_INVALID
    assert "at most 6 decimals" in out


def test_crds_command_matches_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", "crds"],
        capture_output=True,
        text=True,
        check=True,
    )
    committed = "---\n".join(p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml")))
    assert sorted(result.stdout.split("---\n")) == sorted(committed.split("---\n"))
