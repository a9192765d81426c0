"""A budget deleted and created again is a new object with a new uid, and a new audit chain
beside the old one: (budget, uid) names a chain. Before, the embedded ledger refused every
write of the new budget (its audit table was keyed by budget and seq), and the verifier read
the two chains as one, broken and out of order, though nothing had been touched."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from budgetops.apis.ledger import Ledger
from budgetops.apis.resources import BudgetKey
from budgetops.cli.attestation import envelope_check
from budgetops.cli.defaults import VERDICT_KEYS_ENV
from budgetops.cli.main import main
from budgetops.engine import audit, ledger
from budgetops.store import BudgetStore
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging
from tests.conftest import EXAMPLES
from tests.memstore import MemStore

from .test_audit import BUDGET, KEY, T0, fresh, messages, sign_with
from .test_decisions import trust_budget

OLD, NEW = "0c6f4d2e-5b1a-4a8e-9f3d-2e7c1b0a9d84", "7d1e9b44-c0f2-4e6a-8b5d-93a1f6e2c057"
OLD_NAME, NEW_NAME = f"{BUDGET} (uid 0c6f4d2e)", f"{BUDGET} (uid 7d1e9b44)"


def life(uid: str, batches: int) -> tuple[Ledger, list[str]]:
    """One life of BUDGET as its object `uid`: `batches` signed writes of one reservation
    each, published with their heads (the first write adds a checkpoint)."""
    book = fresh()
    lines = []
    for n in range(batches):
        now = T0 + timedelta(minutes=n)
        ledger.reserve(book, account="a", key=f"k{n}", amount=Decimal(1), now=now, ttl=timedelta(1))
        for sealed in audit.seal(book, budget=BUDGET, uid=uid, now=now, sign=sign_with(KEY)):
            lines += [sealed.line, *([sealed.head] if sealed.head else [])]
    return book, lines


def lives() -> tuple[Ledger, list[str], list[str]]:
    """The deleted budget's trail (records 1-3), then its new life's (records 1-2), and the
    new life's ledger, whose head the budget holds now."""
    _, before = life(OLD, 2)
    book, after = life(NEW, 1)
    return book, before, after


def check(lines: list[str], book: Ledger) -> audit.ChainReport:
    """`lines` verified against the head of `book`, the budget's new life."""
    heads = {BUDGET: (NEW, book.audit_head)}
    return audit.verify_chain(lines, heads=heads, check=envelope_check([KEY.public]))


def records_of(lines: list[str]) -> list[int]:
    """The positions in `lines` of records (not heads)."""
    return [n for n, line in enumerate(lines) if '"prev"' in line]


def test_two_lives_of_a_budget_verify_as_two_chains() -> None:
    book, before, after = lives()
    report = check([*before, *after], book)  # the head names the new uid's chain
    assert report.ok, messages(report)
    assert report.summary() == {
        OLD_NAME: {"records": 3, "lastSeq": 3, "checkpoints": 1, "signedHead": 3},
        NEW_NAME: {"records": 2, "lastSeq": 2, "checkpoints": 1, "signedHead": 2},
    }


def test_a_budget_with_one_chain_is_named_as_before() -> None:
    book, _, after = lives()
    report = check(after, book)
    assert report.ok, messages(report)
    assert set(report.summary()) == {BUDGET}


def test_a_record_of_the_new_life_edited_is_found_in_its_chain() -> None:
    book, before, after = lives()
    first = records_of(after)[0]
    record = json.loads(after[first])
    record["amount"] = "0"
    after[first] = json.dumps(record)
    assert messages(check([*before, *after], book)) == [
        f"line {len(before) + first + 1}: {NEW_NAME}: record 1 was changed: its hash does not match"
    ]


def test_records_of_the_new_life_out_of_order_are_found() -> None:
    book, before, after = lives()
    one, two = records_of(after)
    after[one], after[two] = after[two], after[one]
    found = messages(check([*before, *after], book))
    assert (
        f"line {len(before) + one + 1}: {NEW_NAME}: record 2 follows record 0: record 1 "
        in (found[0])
    )
    assert all(NEW_NAME in problem for problem in found), found


def test_a_record_moved_to_the_other_chain_breaks_it() -> None:
    """The uid is hashed: a record of the old life relabelled as the new one's is changed."""
    book, before, after = lives()
    record = json.loads(after[0])
    record["uid"] = OLD
    assert not check([*before, json.dumps(record), *after[1:]], book).ok


def test_only_the_current_uids_chain_is_held_against_the_head() -> None:
    book, before, _ = lives()
    report = check(before, book)  # the new life's records are lost
    assert messages(report) == [
        f"line 0: {NEW_NAME}: the log ends at no record, and the budget's head is "
        "record 2: records 1-2 are missing"
    ]


def test_replicas_logs_of_two_lives_merge_chain_by_chain() -> None:
    book, before, after = lives()
    merged = audit.merge_logs([[*before[:2], *after[2:]], [*after[:2], *before[2:]]])
    report = check([text for _, _, text in merged], book)
    assert report.ok, messages(report)
    assert len(report.chains) == 2


def test_a_witness_of_two_lives_compares_chain_by_chain() -> None:
    _, before, after = lives()
    assert audit.compare([*before, *after], [*before, *after]) == []
    lost = [line for line in after if json.loads(line).get("seq") != 2]
    assert [str(p) for p in audit.compare([*before, *after], [*before, *lost])] == [
        f"line {len(before) + 2}: {NEW_NAME}: record 2 of this copy is not in the ledger"
    ]


# The embedded ledger.


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_apply_gives_a_new_budget_a_uid_it_keeps_until_deleted(kind: str, tmp_path: Path) -> None:
    store: BudgetStore = MemStore() if kind == "memory" else SQLiteStore(tmp_path / "l.sqlite3")
    key = BudgetKey.of(trust_budget())
    uid = store.apply(trust_budget()).metadata.uid
    assert len(uid or "") == 36
    assert store.apply(trust_budget(initialBalance=7)).metadata.uid == uid
    store.delete(key)
    assert store.apply(trust_budget()).metadata.uid not in (uid, None)


SPEND = BudgetKey("TrustBudget", "agent-llm-spend")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_a_budget_deleted_and_applied_again_verifies_with_both_trails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user does it: apply, charge (signed), delete, apply and charge again; `verify
    --audit db` reads both lives, each its own chain, with nothing broken."""
    monkeypatch.setenv(VERDICT_KEYS_ENV, str(tmp_path / "keys"))
    db = str(tmp_path / "ledger.sqlite3")
    manifest = str(EXAMPLES / "trustbudget-llm-spend.yaml")
    charge = ("charge", "agent-llm-spend", "--account", "serviceaccount:payments/agent")
    assert run("apply", "-f", manifest, "--db", db)[0] == 0
    for uid in ("a", "b"):
        assert run(*charge, "--id", uid, "--cost", "1.00", "--db", db)[0] == 0
    with contextlib.closing(SQLiteStore(db)) as store:
        first = store.get(SPEND).metadata.uid or ""
        store.delete(SPEND)
    assert run("apply", "-f", manifest, "--db", db)[0] == 0
    code, out = run(*charge, "--id", "a", "--cost", "1.00", "--db", db)
    assert code == 0, out  # a new budget: the key it settled before is not a replay here
    with contextlib.closing(SQLiteStore(db, mode="ro")) as store:
        second = store.get(SPEND).metadata.uid or ""
    code, out = run("verify", "--audit", "db", "--db", db)
    assert code == 0, out
    assert sorted(out.splitlines()) == sorted(
        [
            f"{SPEND} (uid {first[:8]}): 5 records through 5, 1 signed checkpoints",
            f"{SPEND} (uid {second[:8]}): 3 records through 3, 1 signed checkpoints",
            "audit trail verified: 8 records",
        ]
    )


# A ledger made before the audit table had a uid column.

OLD_AUDIT = """
CREATE TABLE audit (
    budget TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    record TEXT    NOT NULL,
    PRIMARY KEY (budget, seq)
)
"""


def old_ledger(path: Path) -> BudgetKey:
    """A ledger as BudgetOps wrote one before: its budget stored without a uid (so its
    records carry ""), and its audit table keyed by (budget, seq)."""
    with contextlib.closing(SQLiteStore(path)) as store:
        key = BudgetKey.of(store.apply(trust_budget(initialBalance=100)))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        (obj,) = db.execute("SELECT object FROM budgets").fetchone()
        document = json.loads(obj)
        del document["metadata"]["uid"]
        db.execute("UPDATE budgets SET object = ?", (json.dumps(document),))
    with contextlib.closing(SQLiteStore(path)) as store:
        for n in range(5):
            store.update_status(key, charging(f"uid-{n}", now=T0))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("ALTER TABLE audit RENAME TO audit_new")
        db.execute(OLD_AUDIT)
        db.execute("INSERT INTO audit SELECT budget, seq, record FROM audit_new")
        db.execute("DROP TABLE audit_new")
    return key


def layout(path: Path) -> tuple[list[str], list[list[str]]]:
    """The audit table's columns (generated ones too) and its unique keys."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_xinfo(audit)")]
        indexes = [row[1] for row in db.execute("PRAGMA index_list(audit)") if row[2]]
        keys = [[row[2] for row in db.execute(f"PRAGMA index_info('{i}')")] for i in indexes]
    return columns, keys


def heads(store: SQLiteStore) -> dict[str, tuple[str, audit.AuditHead]]:
    found = {}
    for budget in store.list():
        assert isinstance(budget.status, Ledger)
        found[str(BudgetKey.of(budget))] = (budget.metadata.uid or "", budget.status.audit_head)
    return found


def test_an_old_ledger_is_read_as_it_is_and_rekeyed_by_uid_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    key = old_ledger(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        before = [record for (record,) in db.execute("SELECT record FROM audit ORDER BY seq")]
    assert len(before) == 5
    with contextlib.closing(SQLiteStore(path, mode="ro")) as reader:
        assert list(reader.audit_lines()) == before  # read, and left as it is
    assert layout(path) == (["budget", "seq", "record"], [["budget", "seq"]])

    store = SQLiteStore(path)
    try:
        assert layout(path) == (["budget", "seq", "record", "uid"], [["budget", "uid", "seq"]])
        assert list(store.audit_lines()) == before  # every record, in order
        assert store.get(key).metadata.uid is None  # its chain goes on under ""
        store.update_status(key, charging("uid-5", now=T0))
        store.delete(key)
        uid = store.apply(trust_budget(initialBalance=100)).metadata.uid or ""
        store.update_status(key, charging("uid-0", now=T0))
        report = audit.verify_chain(store.audit_lines(), heads=heads(store))
    finally:
        store.close()
    assert report.ok, [str(p) for p in report.problems]
    assert {name: c["records"] for name, c in report.summary().items()} == {
        f"{key} (no uid)": 6,
        f"{key} (uid {uid[:8]})": 1,
    }


def test_an_unreadable_record_of_an_old_ledger_is_kept_for_verify_to_report(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    old_ledger(path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE audit SET record = '{\"prev\": broken' WHERE seq = 3")
    with contextlib.closing(SQLiteStore(path)) as store:
        lines = store.audit_lines()
    assert len(lines) == 5
    report = audit.verify_chain(lines)
    assert str(report.problems[0]) == "line 3: ?: a record that is not valid JSON"


def test_a_budgetops_from_before_still_writes_the_audit_table(tmp_path: Path) -> None:
    """It inserts (budget, seq, record), as before: the uid is read from the record, so a
    rollback, or an older CLI on the same ledger, writes on, and chains stay apart."""
    path = tmp_path / "ledger.sqlite3"
    SQLiteStore(path).close()
    insert = "INSERT INTO audit VALUES (?, ?, ?)"  # the statement of every BudgetOps before
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for uid in (OLD, NEW):
            db.execute(insert, (BUDGET, 1, json.dumps({"budget": BUDGET, "uid": uid, "seq": 1})))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(insert, (BUDGET, 1, json.dumps({"budget": BUDGET, "uid": NEW, "seq": 1})))
        assert db.execute("SELECT uid FROM audit ORDER BY rowid").fetchall() == [(OLD,), (NEW,)]
