"""A CLI denial is audited and attested like a webhook denial: its entry carries a verdict,
the ledger keeps the signed envelope, `verify` accepts it and the audit trail records it."""

from __future__ import annotations

import json
from pathlib import Path

from budgetops.apis.resources import BudgetKey, RiskBudget, TrustBudget
from budgetops.cli.budgets import EXIT_DENIED
from budgetops.store.sqlite import SQLiteStore
from tests.unit.test_cli import db as db  # noqa: PLC0414 (the fixture)
from tests.unit.test_cli import run


def _denial(db: str, key: BudgetKey) -> tuple[str, dict[str, object], tuple[str, ...]]:
    """The last entry's verdict digest, its envelope and the audit trail of the ledger."""
    store = SQLiteStore(Path(db), mode="ro")
    try:
        budget = store.get(key)
        assert isinstance(budget, TrustBudget | RiskBudget)
        last = budget.status.entries[-1]
        assert last.action == "deny", last
        assert last.verdict
        envelope = store.verdict(last.verdict)
        assert envelope is not None
        return last.verdict, envelope, store.audit_lines()
    finally:
        store.close()


def test_a_cli_charge_denial_is_audited_and_signed(db: str, tmp_path: Path) -> None:
    charge = ("charge", "agent-llm-spend", "--account", "serviceaccount:payments/agent")
    assert run(*charge, "--id", "a", "--cost", "100.00", "--db", db)[0] == 0
    code, out = run(*charge, "--id", "b", "--cost", "0.01", "--db", db)
    assert code == EXIT_DENIED, out
    digest, envelope, trail = _denial(db, BudgetKey("TrustBudget", "agent-llm-spend"))
    assert any(digest in line for line in trail)
    (tmp_path / "verdict.json").write_text(json.dumps(envelope))
    code, out = run("verify", str(tmp_path / "verdict.json"), "--db", db)
    assert code == 0, out
    assert f"verified: {digest}" in out
    assert "denied" in out


def test_a_cli_consume_denial_is_audited_and_signed(db: str, tmp_path: Path) -> None:
    consume = ("consume", "payments-api", "-n", "payments", "--db", db)
    assert run(*consume, "--points", "100", "--release-id", "v1")[0] == 0
    code, out = run(*consume, "--points", "10", "--release-id", "v2")
    assert code == EXIT_DENIED, out
    digest, envelope, trail = _denial(db, BudgetKey("RiskBudget", "payments-api", "payments"))
    assert any(digest in line for line in trail)
    (tmp_path / "verdict.json").write_text(json.dumps(envelope))
    code, out = run("verify", str(tmp_path / "verdict.json"), "--db", db)
    assert code == 0, out
    assert f"verified: {digest}" in out


def test_a_cli_dry_run_denial_records_nothing(db: str) -> None:
    consume = ("consume", "payments-api", "-n", "payments", "--db", db)
    assert run(*consume, "--points", "100", "--release-id", "v1")[0] == 0
    before = SQLiteStore(Path(db), mode="ro").audit_lines()
    code, _ = run(*consume, "--points", "10", "--release-id", "v2", "--dry-run")
    assert code == EXIT_DENIED
    assert SQLiteStore(Path(db), mode="ro").audit_lines() == before
