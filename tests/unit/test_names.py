"""Names and keys from outside: what a ledger refuses, and how the CLI prints what it holds.

Before, a lone surrogate in a username or uid reached the SQLite write (a 500), and control
characters, escape sequences and look-alike letters were stored and printed raw.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetops.apis.ledger import Account, Entry
from budgetops.apis.names import name_problem, shown
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine.ledger import InvalidCharge, check_charge
from budgetops.store.sqlite import SQLiteStore

from .test_admission import admitting, deployment, request
from .test_cli import run
from .test_decisions import risk_budget, trust_budget

HOSTILE = {
    "lone surrogate": "al\ud800ice",
    "escape sequence": "al\x1b[2Jice",
    "NUL": "al\x00ice",
    "newline": "al\nice",
    "bidi override": "al\u202eice",
    "zero-width space": "al\u200bice",
    "line separator": "al\u2028ice",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_rule_refuses_what_a_terminal_or_a_file_would_not_show_as_written(text: str) -> None:
    problem = name_problem(text, 253)
    assert problem is not None
    assert "printable characters only" in problem
    assert text not in problem, "the refusal quotes the name escaped, never raw"
    with pytest.raises(InvalidCharge, match="the account al"):
        check_charge(account=text, key="k", amount=Decimal(1))
    with pytest.raises(InvalidCharge, match="the idempotency key"):
        check_charge(account="a", key=text, amount=Decimal(1))


@pytest.mark.parametrize("text", ["alice", "josé", "用户", "user:\u0430lice", "a b", "DOMAIN\\bob"])
def test_the_rule_takes_printable_names_of_any_script(text: str) -> None:
    assert name_problem(text, 253) is None


def test_shown_escapes_all_but_printable_ascii_so_look_alikes_differ() -> None:
    assert shown("user:alice") == "user:alice"
    assert shown("user:\u0430lice") == "user:\\u0430lice"  # Cyrillic a
    assert shown("a\x1b[31mb") == "a\\x1b[31mb"
    assert shown("x\ud800") == "x\\ud800"
    assert shown("\U0001f600") == "\\U0001f600"
    assert shown("DOMAIN\\bob") == "DOMAIN\\\\bob", "a literal backslash cannot pass as an escape"


def review(store: SQLiteStore, body: dict[str, Any]) -> dict[str, Any]:
    """The webhook's answer to `body`, sent as the API server sends it (JSON, which spells a
    lone surrogate as an escape that decodes to one), as an AdmissionReview response: an
    envelope refused whole (HTTP 400) is shown as the denial the API server makes of it."""
    answer = asyncio.run(admitting(store).review(json.dumps(body).encode()))
    if answer.status == 400:
        return {"allowed": False, "status": {"code": 400, "message": answer.body["error"]}}
    assert answer.status == 200, answer.body
    result: dict[str, Any] = answer.body["response"]
    return result


def trust_store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget(subjects={"patterns": ["*"]}, initialBalance=5))
    return store


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("where", ["user", "uid"])
def test_the_webhook_denies_a_name_the_ledger_does_not_take_with_a_calm_400(
    tmp_path: Path, text: str, where: str
) -> None:
    store = trust_store(tmp_path)
    answer = review(store, request(user=text) if where == "user" else request(uid=text))
    assert not answer["allowed"]
    assert answer["status"]["code"] == 400
    surrogate_uid = where == "uid" and text == HOSTILE["lone surrogate"]  # refused as JSON
    expected = "unicode string" if surrogate_uid else "printable characters only"
    assert expected in answer["status"]["message"]
    assert text not in answer["status"]["message"]
    assert store.ready()
    budget = store.get(BudgetKey("TrustBudget", "certs"))
    assert isinstance(budget, TrustBudget)
    assert budget.status.accounts == {}
    assert review(store, request(uid="fine"))["allowed"]


def test_the_webhook_denies_a_release_id_holding_an_escape_sequence(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    release: dict[str, Any] = {"budgetops.dev/release-id": "v1\x1b]0;pwned\x07"}
    shipped = request(
        resource={"group": "apps", "version": "v1", "resource": "deployments"},
        kind="Deployment",
        namespace="payments",
        obj=deployment(**release),
    )
    answer = review(store, shipped)
    assert not answer["allowed"]
    assert answer["status"]["code"] == 400
    assert "printable characters only" in answer["status"]["message"]
    budget = store.get(BudgetKey("RiskBudget", "payments-api", "payments"))
    assert isinstance(budget, RiskBudget)
    assert budget.status.consumed == 0


@pytest.mark.parametrize("reason", ["INC-1 \ud800", "INC-1 \x1b[2J", "INC-1 \u202e"])
def test_a_break_glass_reason_is_held_to_the_rule_too(tmp_path: Path, reason: str) -> None:
    """The reason is kept in the status and the audit trail and echoed to the requester's
    terminal; a lone surrogate in it was a 500."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    glass = {
        "subjects": {"groups": ["oncall"]},
        "maxCertificateTTL": "1h",
        "rateLimit": {"count": 3, "per": "24h"},
    }
    store.apply(trust_budget(subjects={"patterns": ["*"]}, initialBalance=1, breakGlass=glass))
    assert review(store, request(user="ann", groups=("oncall",), uid="spent"))["allowed"]
    csr = {
        "metadata": {
            "name": "c",
            "uid": "c1",
            "annotations": {"budgetops.dev/break-glass": reason},
        },
        "spec": {"expirationSeconds": 600},
    }
    answer = review(store, request(user="ann", groups=("oncall",), obj=csr))
    assert not answer["allowed"]
    assert answer["status"]["code"] == 400
    assert answer["status"]["message"].startswith("budgetops.dev/break-glass: INC-1 \\")
    assert reason not in answer["status"]["message"]
    budget = store.get(BudgetKey("TrustBudget", "certs"))
    assert isinstance(budget, TrustBudget)
    assert budget.status.break_glass_uses == []
    assert store.ready()


ESCAPE = "user:\x1b[2J\x1b]0;pwned\x07eve"
LOOK_ALIKE = "user:\u0430lice"
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def written_before_the_rule(budget: Budget) -> bool:
    """Accounts and entries as a ledger made before the rule may hold them."""
    assert isinstance(budget, TrustBudget)
    for name in (ESCAPE, LOOK_ALIKE, "user:alice"):
        budget.status.accounts[name] = Account(
            allocation=Decimal(5), balance=Decimal(4), window_start=NOW, spent=Decimal(1)
        )
        budget.status.entries.append(
            Entry(at=NOW, account=name, action="reserve", amount=Decimal(1), key=name, object=name)
        )
    return True


@pytest.mark.parametrize(
    "argv",
    [("status",), ("status", "certs"), ("list",), ("receipts", "certs")],
    ids=["status", "status certs", "list", "receipts"],
)
def test_the_cli_prints_names_escaped_so_nothing_reaches_the_terminal_raw(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    store = trust_store(tmp_path)
    store.update_status(BudgetKey("TrustBudget", "certs"), written_before_the_rule)
    code, out = run(*argv, "--db", str(store.path))
    assert code == 0, out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "user:\\x1b[2J\\x1b]0;pwned\\x07eve" in out
    assert "user:\\u0430lice" in out, "the look-alike is visibly not user:alice"
    assert "user:alice" in out


def test_json_output_keeps_names_exact(tmp_path: Path) -> None:
    store = trust_store(tmp_path)
    store.update_status(BudgetKey("TrustBudget", "certs"), written_before_the_rule)
    code, out = run("receipts", "certs", "-o", "json", "--db", str(store.path))
    assert code == 0
    assert {row["account"] for row in json.loads(out)} == {ESCAPE, LOOK_ALIKE, "user:alice"}
