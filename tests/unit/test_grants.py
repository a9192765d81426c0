"""Grants: extra allocation until a time, given by a person with a reason (issue 24 item 3).

On the embedded ledger with an injected clock: a grant raises the account's allocation, is
audited and shown, and at expiry the allocation drops back (never below what is committed)
and the reconciler takes the grant out, waking for it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import pytest

from budgetops.apis.ledger import GRANTS_MAX
from budgetops.apis.resources import BudgetKey, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import ChangeClass
from budgetops.cli.commands import CHANGE_CLASSES
from budgetops.engine import ledger
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.reconcile import next_due, reconcile_risk, reconcile_trust
from budgetops.engine.rollover import trust_account
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases import administering

from . import test_cli

run = test_cli.run
db = test_cli.db

CERTS = BudgetKey("TrustBudget", "developer-certificates")
PAYMENTS = BudgetKey("RiskBudget", "payments-api", "payments")
START = datetime(2026, 12, 7, 10, tzinfo=UTC)
UNTIL = START + timedelta(hours=6)


@pytest.fixture
def store(db: str) -> SQLiteStore:
    opened = SQLiteStore(db)
    yield opened  # type: ignore[misc]
    opened.close()


def _grant(store: SQLiteStore, key: BudgetKey, account: str | None, amount: str) -> tuple:
    return administering.grant(
        store, key, account=account, amount=Decimal(amount), until=UNTIL,
        by="alice", reason="release week", clock=lambda: START,
    )  # fmt: skip


def _actions(store: SQLiteStore) -> list[tuple[str, dict]]:
    records = [json.loads(line) for line in store.audit_lines()]
    return [(r["action"], r.get("detail", {})) for r in records if r["action"].startswith("grant")]


def test_a_trust_grant_raises_the_account_until_it_expires_then_drops_back(
    store: SQLiteStore,
) -> None:
    assert _grant(store, CERTS, "user:bob", "50") == ("user:bob", Decimal(150), Decimal(150))

    def spend(budget: TrustBudget, at: datetime, amount: int) -> None:
        trust_account(budget.status, budget.spec, key="user:bob", now=at)
        ledger.reserve(budget.status, account="user:bob", key=f"k{amount}", amount=Decimal(amount),
                       now=at, ttl=timedelta(minutes=5))  # fmt: skip

    store.update_status(CERTS, lambda b: spend(b, START + timedelta(hours=1), 120))
    budget = store.get(CERTS)
    assert isinstance(budget, TrustBudget)
    assert [g.by for g in budget.status.grants] == ["alice"]
    assert next_due(budget.status) == START + timedelta(hours=1, minutes=5)  # the reservation

    def later(b: TrustBudget) -> object:
        return reconcile_trust(b.status, b.spec, budget=CERTS.name, generation=1,
                               now=UNTIL, seen=None, samples=UsageSamples())  # fmt: skip

    outcome = store.update_status(CERTS, later)
    assert outcome.changed  # type: ignore[attr-defined]
    budget = store.get(CERTS)
    assert isinstance(budget, TrustBudget)
    account = budget.status.accounts["user:bob"]
    assert budget.status.grants == []
    assert (account.allocation, account.balance) == (120, 0)  # held at what is committed
    assert [a for a, _ in _actions(store)] == ["grant", "grant-expired"]
    assert _actions(store)[0][1] == {
        "by": "alice", "reason": "release week", "expiresAt": "2026-12-07T16:00:00Z",
    }  # fmt: skip


def test_the_reconciler_wakes_at_a_grants_expiry(store: SQLiteStore) -> None:
    _grant(store, CERTS, "user:bob", "5")
    budget = store.get(CERTS)
    assert isinstance(budget, TrustBudget)
    assert next_due(budget.status) == UNTIL  # before the account's reset at midnight


def test_a_risk_grant_raises_the_window_and_gives_it_back_at_expiry(store: SQLiteStore) -> None:
    assert _grant(store, PAYMENTS, None, "40")[1] == 160

    def later(b: RiskBudget) -> object:
        return reconcile_risk(b.status, b.spec, budget=PAYMENTS.name, generation=1,
                              now=UNTIL, seen=None)  # fmt: skip

    outcome = store.update_status(PAYMENTS, later)
    assert outcome.changed  # type: ignore[attr-defined]
    budget = store.get(PAYMENTS)
    assert isinstance(budget, RiskBudget)
    assert (budget.status.allocation, budget.status.grants) == (120, [])


@pytest.mark.parametrize(
    ("account", "amount", "wanted"),
    [
        ("other-service", "5", "grants to its service payments-api only"),
        (None, "1.5", "whole risk points"),
    ],
)
def test_a_risk_grant_is_whole_points_for_its_service(
    store: SQLiteStore, account: str | None, amount: str, wanted: str
) -> None:
    with pytest.raises(ValueError, match=wanted):
        _grant(store, PAYMENTS, account, amount)
    budget = store.get(PAYMENTS)
    assert isinstance(budget, RiskBudget)
    assert budget.status.grants == []


def test_grant_and_status_on_the_cli(db: str) -> None:
    code, out = run(
        "grant", "developer-certificates", "--account", "user:bob", "--amount", "50",
        "--for", "24h", "--reason", "release week", "--by", "alice", "--db", db,
    )  # fmt: skip
    assert code == 0, out
    assert "user:bob granted 50 until" in out
    assert "allocation now 150, balance 150" in out
    code, out = run("status", "developer-certificates", "--db", db)
    assert "user:bob: 150 of 150 points left" in out
    assert "Grant: user:bob +50 points until " in out
    assert out.rstrip().endswith("by alice: release week")
    code, out = run(
        "grant", "--service", "payments-api", "--amount", "40",
        "--until", "2099-01-01T00:00:00Z", "--reason", "launch", "--db", db,
    )  # fmt: skip
    assert (code, "within 366 days" in out) == (2, True), out
    code, out = run("status", "--service", "payments-api", "-o", "json", "--db", db)
    assert json.loads(out)[0]["grants"] == []


@pytest.mark.parametrize(
    "flags",
    [
        ("--amount", "-5", "--for", "1h"),
        ("--amount", "5", "--until", "2026-12-31"),
        ("--amount", "5", "--for", "1" * 40 + "h"),
        ("--amount", "5", "--for", "1h", "--until", "2026-12-31T00:00:00Z"),
        ("--amount", "5"),
    ],
)
def test_grant_refuses_bad_flags_with_exit_2(db: str, flags: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as refused:  # argparse: its usage and a one-line error
        run("grant", "developer-certificates", "--account", "user:bob", "--reason", "x",
            *flags, "--db", db)  # fmt: skip
    assert refused.value.code == 2


def test_grant_refuses_an_empty_reason_before_the_ledger_is_opened(db: str) -> None:
    assert run("grant", "developer-certificates", "--account", "user:bob", "--amount", "1",
               "--for", "1h", "--reason", " ", "--db", db)[0] == 2  # fmt: skip


def test_a_budget_holds_at_most_grants_max_and_an_ended_one_makes_room(
    store: SQLiteStore,
) -> None:
    for n in range(GRANTS_MAX):
        _grant(store, CERTS, f"user:{n}", "1")
    with pytest.raises(ValueError, match="32 grants already"):
        _grant(store, CERTS, "user:late", "1")
    administering.grant(
        store, CERTS, account="user:late", amount=Decimal(1), until=UNTIL + timedelta(hours=1),
        by="alice", reason="after the others", clock=lambda: UNTIL,
    )  # fmt: skip
    budget = store.get(CERTS)
    assert isinstance(budget, TrustBudget)
    assert [g.account for g in budget.status.grants] == ["user:late"]
    assert [a for a, _ in _actions(store)].count("grant-expired") == GRANTS_MAX


def test_the_parser_knows_every_change_class() -> None:
    assert get_args(ChangeClass) == CHANGE_CLASSES


def test_a_band_exception_lets_its_class_through_until_it_expires(db: str) -> None:
    consume = ("consume", "--service", "payments-api", "--db", db)
    assert run(*consume, "--points", "110", "--release-id", "big")[0] == 0  # Red from here
    code, out = run(*consume, "--points", "1", "--release-id", "r1")
    assert (code, "In Red only low-risk, security-fix, incident changes" in out) == (1, True)
    code, out = run(
        "grant", "--service", "payments-api", "--change-class", "standard", "--for", "1h",
        "--reason", "hotfix train", "--by", "alice", "--db", db,
    )  # fmt: skip
    assert code == 0, out
    assert "standard through any band until" in out
    assert (
        "Grant: payments-api standard through any band until"
        in run("status", "--service", "payments-api", "--db", db)[1]
    )
    code, out = run(*consume, "--points", "1", "--release-id", "r1")
    assert code == 0, out
    assert "standard ships through Red by the exception alice granted until" in out
    store = SQLiteStore(db)
    try:
        later = datetime.now(UTC) + timedelta(hours=2)
        store.update_status(PAYMENTS, lambda b: reconcile_risk(
            b.status, b.spec, budget=PAYMENTS.name, generation=1, now=later, seen=None
        ))  # fmt: skip
        [(given, detail), (ended, same)] = _actions(store)
        assert (given, ended, detail == same) == ("grant", "grant-expired", True)
        assert (detail["by"], detail["changeClass"]) == ("alice", "standard")
    finally:
        store.close()
    code, out = run(*consume, "--points", "1", "--release-id", "r2")
    assert code == 1, out


def test_a_band_exception_is_a_risk_budget_class_without_an_amount(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="for a RiskBudget"):
        administering.grant(
            store, CERTS, account="user:bob", amount=Decimal(0), until=UNTIL, by="alice",
            reason="x", clock=lambda: START, change_class="standard",
        )  # fmt: skip
    with pytest.raises(ValueError, match="names one of"):
        administering.grant(
            store, PAYMENTS, account=None, amount=Decimal(5), until=UNTIL, by="alice",
            reason="x", clock=lambda: START, change_class="standard",
        )  # fmt: skip
