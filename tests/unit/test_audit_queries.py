"""The monitoring queries of docs/verdicts.md, run exactly as written: the SQL on an embedded
ledger's audit table, the jq programs (through the jq bindings) on the same records as JSON
Lines, as `kubectl logs` would give them."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import jq
import pytest

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import Admission
from budgetops.crypto import dsse
from budgetops.engine.clock import system_clock
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.attest import Attestor

from .test_admission import request
from .test_decisions import trust_budget

DOC = Path(__file__).resolve().parents[2] / "docs" / "verdicts.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two TrustBudgets govern the same CSRs, charged now: `certs` (1 each of 10) runs out
    after ten and denies two; `tokens` (3 each of 100) is charged for the ten admitted."""
    path = tmp_path_factory.mktemp("queries") / "ledger.sqlite3"
    store = SQLiteStore(path)
    store.apply(trust_budget(initialBalance=10))
    tokens = trust_budget(initialBalance=100, cost=3)
    tokens.metadata.name = "tokens"
    store.apply(tokens)
    keyring = dsse.Keyring.from_files(dsse.Keyring.new("k1"))
    webhook = Admission(
        store,
        clock=system_clock,
        identity=Identity(),
        ttl=timedelta(minutes=5),
        attestor=Attestor(keyring),
    )
    for n in range(12):
        asyncio.run(webhook.review(json.dumps(request(uid=f"csr-{n}")).encode()))
    store.close()
    return path


def test_the_documentation_has_the_three_questions_in_both_languages() -> None:
    assert len(blocks("sql")) == 3
    assert len(blocks("jq")) == 3


def sql(ledger: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(ledger) as db:
        return db.execute(query).fetchall()


def jq_lines(ledger: Path, program: str) -> Any:
    with sqlite3.connect(ledger) as db:
        records = [json.loads(r) for (r,) in db.execute("SELECT record FROM audit")]
    return jq.compile(program).input_value(["serving POST ...", *records]).first()


def test_low_balances(ledger: Path) -> None:
    low, _, _ = blocks("sql")
    assert sql(ledger, low) == [("TrustBudget/certs", "user:alice", "0", "10")]
    program, _, _ = blocks("jq")
    assert jq_lines(ledger, program) == [
        {"budget": "TrustBudget/certs", "account": "user:alice", "balance": "0", "allocation": "10"}
    ]


def test_recent_high_cost_activity(ledger: Path) -> None:
    _, recent, _ = blocks("sql")
    found = sql(ledger, recent)
    assert [(row[0], row[3]) for row in found] == [("TrustBudget/tokens", "3")] * 10 + [
        ("TrustBudget/certs", "1")
    ] * 10
    _, program, _ = blocks("jq")
    charges = jq_lines(ledger, program)
    assert [(c["budget"], c["cost"]) for c in charges] == [(row[0], row[3]) for row in found]


def test_denials_and_break_glass(ledger: Path) -> None:
    _, _, denials = blocks("sql")
    found = sql(ledger, denials)
    assert [(row[0], row[3], row[4]) for row in found] == [
        ("TrustBudget/certs", "Exhausted", "CertificateSigningRequest/csr-csr-11"),
        ("TrustBudget/certs", "Exhausted", "CertificateSigningRequest/csr-csr-10"),
    ]
    _, _, program = blocks("jq")
    assert [(d["budget"], d["reason"], d["object"]) for d in jq_lines(ledger, program)] == [
        (row[0], row[3], row[4]) for row in found
    ]
