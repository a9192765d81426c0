"""A TrustBudget issuance on the command line: `charge` answers with the seed's receipt block,
and `check --account` asks "may I issue?" without charging, as a table or a signed verdict."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.store.sqlite import SQLiteStore

from . import test_cli

run = test_cli.run
db = test_cli.db
"""The examples on a fresh embedded ledger (the fixture of the CLI's other tests)."""

CERTS = "developer-certificates"
AGENT = "serviceaccount:payments/agent"
RESETS = r"Resets: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n"


def account(db: str, budget: str, name: str) -> tuple[str, int]:
    """The account's balance and how many audit lines the ledger holds: a check moves neither."""
    store = SQLiteStore(db)
    try:
        found = store.get(BudgetKey("TrustBudget", budget), account=name)
        lines = len(list(store.audit_lines()))
    finally:
        store.close()
    assert isinstance(found, TrustBudget)
    held = found.status.accounts.get(name)
    return ("unopened" if held is None else str(held.balance)), lines


def test_charge_answers_with_the_receipt_block_in_the_budgets_unit(db: str) -> None:
    code, out = run("charge", CERTS, "--account", "user:alice", "--id", "csr-1", "--db", db)
    assert code == 0, out
    assert re.fullmatch(
        "--- Trust Budget Receipt ---\n"
        "Budget ID: user:alice\n"
        "Cost: 1 points\n"
        "Remaining: 99 points\n" + RESETS + "----------------------------\n",
        out,
    ), out
    code, out = run("charge", "agent-llm-spend", "--account", AGENT, "--id", "call-1",
                    "--cost", "0.0457", "--dry-run", "--db", db)  # fmt: skip
    assert code == 0, out
    assert "Cost: 0.0457 USD\nRemaining: 99.9543 USD\n" in out
    assert out.endswith("----------------------------\ndry run, not charged\n")
    assert "Experimental" not in out


def test_a_replayed_charge_keeps_its_one_line(db: str) -> None:
    run("charge", CERTS, "--account", "user:alice", "--id", "csr-1", "--db", db)
    code, out = run("charge", CERTS, "--account", "user:alice", "--id", "csr-1", "--db", db)
    assert (code, out) == (0, "Trust budget user:alice: csr-1 was already charged\n")


def test_check_says_whether_an_account_may_issue_and_charges_nothing(db: str) -> None:
    run("charge", CERTS, "--account", "user:alice", "--id", "csr-1", "--db", db)
    before = account(db, CERTS, "user:alice")
    code, out = run("check", CERTS, "--account", "user:alice", "--db", db)
    assert code == 0, out
    assert out.startswith("may issue: yes\n--- Trust Budget Receipt ---\n")
    assert "Cost: 1 points\nRemaining: 98 points\n" in out
    assert out.endswith("dry run, not charged\n")
    code, out = run("check", CERTS, "--account", "user:alice", "--cost", "100", "--db", db)
    assert code == 1
    assert out.startswith(
        "may issue: no\ndenied: TrustBudget/developer-certificates: Trust budget exhausted. "
        "This request requires 100 points; 99 remain. Budget resets at "
    )
    assert account(db, CERTS, "user:alice") == before
    code, out = run("check", CERTS, "--account", "user:bob", "--db", db)
    assert code == 0, out
    assert account(db, CERTS, "user:bob")[0] == "unopened"


def test_check_answers_a_ci_gate_with_a_signed_trust_verdict(db: str, tmp_path: Path) -> None:
    before = account(db, "agent-llm-spend", AGENT)
    code, out = run("check", "agent-llm-spend", "--account", AGENT, "--cost", "250.00",
                    "-o", "json", "--db", db)  # fmt: skip
    assert code == 1
    envelope = json.loads(out)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://budgetops.dev/predicates/trust-verdict/v1"
    predicate = statement["predicate"]
    assert predicate["decision"]["allowed"] is False
    assert predicate["budgetCheck"]["result"] == "fail"
    assert predicate["budgetCheck"]["violations"] == [
        {"type": "balance", "limit": 100, "actual": 250}
    ]
    assert predicate["ledger"]["action"] == "none"
    (tmp_path / "verdict.json").write_text(out)
    code, verified = run("verify", str(tmp_path / "verdict.json"), "--db", db)
    assert code == 0, verified
    assert "denied (Exhausted) by TrustBudget/agent-llm-spend" in verified
    assert account(db, "agent-llm-spend", AGENT) == before


def test_check_takes_one_form_or_the_other(db: str) -> None:
    for argv in (
        ("check", "--service", "payments-api"),  # a release needs its points
        ("check", "--service", "payments-api", "--points", "5", "--cost", "1"),
        ("check", "--account", "user:alice"),  # which TrustBudget?
        ("check", CERTS, "--account", "user:alice", "--points", "5"),
        ("check", CERTS, "--account", "user:alice", "--cost", "-1"),
        ("check", CERTS, "--account", "nobody", "--cost", "1"),
    ):
        code, out = run(*argv, "--db", db)
        assert code == 2, (argv, out)
        assert len(out.splitlines()) == 1, out
