"""What a budget holds that the engine adds and drops but never changes (an account's
reservations, the recent entries) is encoded and checked once, when it is new: a hot account
holds every reservation not yet confirmed, and re-checking them all was most of a charge."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import TypeAdapter

from budgetops.apis.ledger import Account, Reservation
from budgetops.apis.resources import TrustBudget
from budgetops.engine.ledger import InvalidCharge, confirm
from budgetops.store import rows as rows_module
from budgetops.store.rows import KEYED, Rows
from tests.charges import charging

from .test_decisions import NOW
from .test_ledger_rows import KEY, opened, with_accounts


def checked(rows: Rows, budget: object, patch: pytest.MonkeyPatch) -> list[str]:
    """The texts `rows.check` reads back, in order."""
    texts: list[str] = []
    real = rows_module._check

    def keeping(key: object, read: Callable[[str], object], text: str) -> None:
        texts.append(text)
        real(key, read, text)  # type: ignore[arg-type]

    patch.setattr(rows_module, "_check", keeping)
    rows.check(KEY, budget)  # type: ignore[arg-type]
    return texts


def reserved(keys: list[str]) -> tuple[TrustBudget, Rows]:
    """A budget of three accounts whose user:u1 holds a reservation under each of `keys`,
    checked and written."""
    budget, rows = opened(with_accounts(3))
    for key in keys:
        charging(key, account="user:u1", now=NOW)(budget)
    rows.check(KEY, budget)
    rows.wrote(rows.changes(budget), budget.status)
    return budget, rows


def test_a_charge_checks_its_own_reservation_not_those_written_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget, rows = reserved([f"held-{n}" for n in range(5)])
    charging("fresh", account="user:u1", now=NOW)(budget)
    [accounts] = [
        text for text in checked(rows, budget, monkeypatch) if text.startswith('{"user:u1"')
    ]
    held = json.loads(accounts)["user:u1"]["reservations"]
    assert set(held) == {"fresh"}
    row = {entry: text for _, entry, text in rows.changes(budget).put}["user:u1"]
    written = {"uid-1", *(f"held-{n}" for n in range(5))}  # uid-1: opened() wrote it
    assert set(json.loads(row)["user:u1"]["reservations"]) == {"fresh", *written}


def test_a_new_reservation_that_would_not_read_back_is_caught() -> None:
    budget, rows = opened(with_accounts(3))
    charging("held", account="user:u1", now=NOW)(budget)
    rows.wrote(rows.changes(budget), budget.status)
    account = budget.status.accounts["user:u1"]
    account.reservations["bad"] = Reservation(
        amount=Decimal(1), created_at=NOW, expires_at=NOW + timedelta(minutes=5), object="o" * 600
    )
    with pytest.raises(InvalidCharge, match="TrustBudget/certs"):
        rows.check(KEY, budget)


def test_rows_joined_from_what_was_encoded_before_are_the_bytes_of_a_whole_dump() -> None:
    """So a row written before reads, and compares (`Rows.written`), as it always did: no
    account is written again for being encoded another way."""
    budget, rows = opened(with_accounts(3))
    accounts = TypeAdapter(dict[str, Account])
    for account in ("user:u2", "user:josé"):  # written as pydantic writes keys
        for n in range(4):
            charging(f"{account}-{n}", account=account, now=NOW)(budget)
            found = rows.changes(budget)
            rows.wrote(found, budget.status)
        status = budget.status
        [(_, _, row)] = found.put
        whole = {account: status.accounts[account]}
        assert row == accounts.dump_json(whole, by_alias=True, exclude_none=True).decode()
        assert found.head == status.model_dump_json(
            by_alias=True, exclude_none=True, exclude=set(KEYED)
        )


def test_a_settling_batch_encodes_each_settled_key_once_for_its_check_and_its_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget, rows = reserved([f"k-{n}" for n in range(20)])
    for n in range(20):
        confirm(budget.status, key=f"k-{n}", now=NOW)
    rows.check(KEY, budget)
    settled = rows_module._adapter(type(budget.status), "settled")
    dumps: list[object] = []
    real = settled.dump_json

    def counting(value: object, **options: Any) -> bytes:
        dumps.append(value)
        return real(value, **options)

    monkeypatch.setattr(settled, "dump_json", counting)
    found = rows.changes(budget)
    assert dumps == []
    assert {entry for name, entry, _ in found.put if name == "settled"} == {
        f"k-{n}" for n in range(20)
    }
