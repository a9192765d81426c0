"""The budget commands on the embedded ledger, as `budgetops` and as `kubectl budget --db`:
what they print, what they write, and the exit codes a script relies on."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from budgetops.apis.resources import BudgetKey, RiskBudget
from budgetops.cli.commands import EXIT_INVALID
from budgetops.store.sqlite import SQLiteStore
from tests.kubeconfigs import unreachable as unreachable_kubeconfig

from . import test_cli

run = test_cli.run
db = test_cli.db
"""The examples on a fresh embedded ledger (the fixture of the CLI's other tests)."""

PAYMENTS = BudgetKey("RiskBudget", "payments-api", "payments")


def payments(db: str) -> RiskBudget:
    store = SQLiteStore(db)
    try:
        budget = store.get(PAYMENTS)
    finally:
        store.close()
    assert isinstance(budget, RiskBudget)
    return budget


def test_consume_then_status_shows_the_seed_view(db: str) -> None:
    code, out = run(
        "consume", "--service", "payments-api", "--points", "25", "--reason", "Release v1.2.3",
        "--release-id", "v1.2.3", "--db", db,
    )  # fmt: skip
    assert code == 0, out
    assert "release key: v1.2.3" in out
    code, out = run("status", "--service", "payments-api", "--db", db)
    assert code == 0
    assert out.splitlines()[:5] == [
        "Service: payments-api",
        f"Window: {payments(db).status.window.key}",  # type: ignore[union-attr]
        "Tier: Customer-Facing Critical (2)",
        "Status: Green",
        "Budget: 25 / 120 RP (20.8%)",
    ]
    assert "████░░░░░░░░░░░░░░░░" in out
    assert "Remaining: 95 RP" in out
    assert "\033[" not in out, "no colour when the output is not a terminal"
    again = run("consume", "payments-api", "-n", "payments", "--points", "25",
                "--release-id", "v1.2.3", "--db", db)  # fmt: skip
    assert "already charged" in again[1]
    assert payments(db).status.consumed == 25


def test_check_decides_without_charging_and_exits_1_when_it_may_not_ship(db: str) -> None:
    code, out = run("check", "--service", "payments-api", "--points", "500", "--db", db)
    assert code == 1
    assert out.startswith(
        "may ship: no\ndenied: RiskBudget/payments/payments-api: "
        "Risk budget payments-api cannot cover"
    )
    code, out = run("check", "--service", "payments-api", "--points", "5", "-o", "json", "--db", db)
    assert code == 0
    verdict = json.loads(base64.b64decode(json.loads(out)["payload"]))  # a signed envelope
    assert verdict["predicateType"] == "https://budgetops.dev/predicates/risk-verdict/v1"
    assert verdict["predicate"]["budgetCheck"]["result"] == "pass"
    assert payments(db).status.consumed == 0
    assert payments(db).status.entries == []


def test_adjust_and_report_metrics_write_through_the_store(db: str) -> None:
    assert (
        run("adjust", "--service", "payments-api", "--by", "24", "--reason", " ", "--db", db)[0]
        == 2
    )
    code, out = run(
        "adjust", "--service", "payments-api", "--by", "24", "--reason", "MTTR halved", "--db", db
    )
    assert code == 0, out
    assert "allocation now 144 RP" in out
    code, out = run(
        "report-metrics", "--service", "payments-api", "--mttr-hours", "24",
        "--change-failure-rate", "8", "--db", db,
    )  # fmt: skip
    assert code == 0, out
    status = payments(db).status
    assert status.allocation == 144
    assert (status.reliability.mttr_hours, status.reliability.change_failure_rate_percent) == (
        24,
        8,
    )
    store = SQLiteStore(db)
    actions = [json.loads(line) for line in store.audit_lines()]
    store.close()
    assert [(r["action"], r.get("detail")) for r in actions if r["action"] != "checkpoint"] == [
        ("adjust", {"reason": "MTTR halved"}),
        ("reliability", {"mttrHours": "24", "changeFailureRatePercent": "8", "p1Incidents": 0}),
    ]


def test_list_filters_by_state_and_speaks_json_and_yaml(db: str) -> None:
    run("consume", "--service", "payments-api", "--points", "100", "--db", db)
    code, out = run("list", "--status", "Red", "-o", "json", "--db", db)
    assert code == 0
    assert [(r["kind"], r["status"]) for r in json.loads(out)] == [("RiskBudget", "Red")]
    code, out = run("list", "--status", "Green", "-o", "yaml", "--db", db)
    assert yaml.safe_load(out) == []
    code, out = run("list", "--db", db)
    assert out.splitlines()[0].split() == [
        "WHERE",
        "WHO",
        "USED",
        "PERCENTUSED",
        "STATUS",
        "RESETSAT",
    ]
    assert "TrustBudget/developer-certificates" in out


def test_list_refuses_a_state_that_does_not_exist(db: str) -> None:
    """A typo is not an empty answer: exit 2 and one line naming the states there are."""
    code, out = run("list", "--status", "Purple,red", "--db", db)
    assert code == EXIT_INVALID
    assert out == (
        "invalid: --status purple: not a state; give some of "
        "Green, Yellow, Red, Exhausted, OK, Low\n"
    )
    assert run("list", "--status", "ok,LOW,exhausted", "--db", db)[0] == 0


def test_history_receipts_and_leases(db: str) -> None:
    run("consume", "--service", "payments-api", "--points", "10", "--reason", "v1", "--db", db)
    window = payments(db).status.window.key  # type: ignore[union-attr]
    code, out = run(
        "history", "--service", "payments-api", "--window", window, "-o", "json", "--db", db
    )
    assert code == 0
    assert json.loads(out)[0]["consumed"] == 10
    assert run("history", "--service", "payments-api", "--window", "1999-01", "--db", db)[0] == 2
    code, out = run("receipts", "--service", "payments-api", "-o", "json", "--db", db)
    assert [r["action"] for r in json.loads(out)] == ["reserve", "confirm"]
    code, out = run("leases", "--db", db)
    assert code == 0
    assert out.split() == [
        "NAME",
        "BUDGET",
        "ACCOUNT",
        "HOLDER",
        "PHASE",
        "GRANTED",
        "SPENT",
        "REMAINING",
    ]


def test_mistakes_are_exit_2_with_one_line(db: str) -> None:
    for argv, says in (
        (("status", "--service", "nope"), "no RiskBudget for service nope"),
        (("consume", "--points", "1"), "name the RiskBudget, or give --service"),
        (("receipts",), "name the TrustBudget"),
    ):
        code, out = run(*argv, "--db", db)
        assert code == 2, out
        assert says in out
        assert len(out.splitlines()) == 1


def test_the_plugin_defaults_to_the_cluster_and_says_when_it_cannot_reach_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = unreachable_kubeconfig(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(config))
    code, out = run("list", plugin=True)
    assert code == 4
    assert out.startswith(f"error: cannot reach the cluster of {config}")
    assert len(out.splitlines()) == 1


def test_status_shows_a_budget_that_does_not_read_and_the_others_still_charge(db: str) -> None:
    """Before, one unreadable budget made `status` (and every admission) fail for all."""
    with sqlite3.connect(db) as ledger:
        ledger.execute(
            "UPDATE budgets SET status = ? WHERE name = ?",
            (json.dumps({"consumed": "lots"}), PAYMENTS.name),
        )
    ledger.close()
    code, out = run("status", "--db", db)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith(
        f"{PAYMENTS}: does not read, so what it governs is refused until it is fixed "
        "(status.consumed: "
    )
    assert any(line.startswith("TrustBudget/developer-certificates") for line in lines)
    code, out = run("status", "-o", "json", "--db", db)
    assert code == 0, out
    shown = {item["metadata"]["name"]: item for item in json.loads(out)}
    assert shown[PAYMENTS.name]["unreadable"].startswith("status.consumed: ")
    assert "status" in shown["developer-certificates"]
    code, out = run(
        "charge", "developer-certificates", "--account", "user:alice", "--id", "x", "--db", db
    )
    assert code == 0, out


def test_status_of_one_account_shows_that_account_alone(db: str) -> None:
    for n, account in enumerate(["user:alice", "user:bob", "user:alice"]):
        code, out = run(
            "charge", "developer-certificates", "--account", account, "--id", f"csr-{n}",
            "--db", db,
        )  # fmt: skip
        assert code == 0, out
    code, out = run("status", "developer-certificates", "--account", "user:alice", "--db", db)
    assert code == 0, out
    assert out.splitlines()[0].startswith("user:alice: 98 of 100 points left, OK, resets ")
    assert "user:bob" not in out
    code, out = run(
        "status", "developer-certificates", "--account", "user:zed", "-o", "json", "--db", db
    )
    assert code == 0, out
    (row,) = json.loads(out)
    assert (row["account"], row["balance"], row["resetsAt"]) == ("user:zed", "100", "")
    code, out = run("status", "--account", "user:alice", "--db", db)
    assert (code, out) == (
        EXIT_INVALID,
        "invalid: --account names an account of a TrustBudget: give the budget's name\n",
    )
