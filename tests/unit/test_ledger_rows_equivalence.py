"""The embedded ledger's rows hold exactly what an honest store holds, whatever happens.

store/rows.py writes only the rows a change touched, and SQLiteStore keeps the budget it
parsed between writes: a change that escapes the tracking, a row dropped or kept by mistake,
or a kept copy that drifts from the file would lose money or idempotency keys without a
word. So the same random status changes, built as the code builds them (charges, replays,
dry runs, confirmations, refunds, take-backs, lease grants, reports and closes, reconcile
passes, window resets, forgotten keys, a charge refused as bad input, a change whose status
would not read back, one that changes its snapshot but says there is nothing to write), go
to a MemStore, which reads and writes the whole status every time, and to a SQLiteStore.
After every step each budget reads the same from both, answers were the same, and so is the
audit trail; along the way the SQLite store is closed and opened again (with and without
group commit and whole-status checks), another process writes through its own store or
reads through a read-only one, and the ledger is put back into the layout before rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from budgetops.apis.ledger import KEY_KEPT, KEYS_FORGOTTEN_EVERY, Ledger, ReleaseMark
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine import leases
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.charges import RiskCharge
from budgetops.engine.decisions import Release
from budgetops.engine.ledger import ZERO, audit, confirm, record, refund
from budgetops.engine.reconcile import Outcome, reconcile_risk, reconcile_trust
from budgetops.engine.rollover import summarize_risk, summarize_trust, trust_account
from budgetops.store.commit import Waiter
from budgetops.store.rows import KEYED
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.charging import Changes
from tests.charges import charging
from tests.memstore import MemStore

T0 = datetime(2026, 1, 31, 23, 20, tzinfo=UTC)
"""Forty minutes before the RiskBudget's monthly window ends; TrustBudget accounts reset hourly."""
TTL = timedelta(minutes=5)
TRUST = BudgetKey("TrustBudget", "spend")
RISK = BudgetKey("RiskBudget", "payments-api", "payments")
KEYS = (TRUST, RISK)
ACCOUNTS = tuple(f"user:u{n}" for n in range(30))
UIDS = tuple(f"uid-{n}" for n in range(16))
"""Few, so that replays, and charges of keys forgotten since, are common."""
RELEASES = tuple(f"release:r{n}" for n in range(6))
LEASE_IDS = ("lease-a", "lease-b", "lease-c")
FORGET = KEY_KEPT + KEYS_FORGOTTEN_EVERY + timedelta(seconds=1)


def trust_budget(balance: str = "1.00") -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": TRUST.name},
            "spec": {
                "subjects": {"patterns": ["*"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": balance,
                "cost": "0.25",
                "unit": "USD",
                "resetInterval": "1h",
            },
        }
    )


def risk_budget() -> RiskBudget:
    return RiskBudget.model_validate(
        {
            "metadata": {"name": RISK.name, "namespace": RISK.namespace},
            "spec": {"serviceId": "payments-api", "allocation": 40},
        }
    )


# Operations are plain data, so that a failing sequence shrinks to something legible; each
# becomes a status change and its `needs_write`, built as the code that makes it builds it.

Op = tuple[Any, ...]
Change = tuple[Callable[[Budget], Any], Callable[[Any], bool]]

cents = st.integers(0, 120).map(lambda n: Decimal(n).scaleb(-2))
skews = st.sampled_from([0, 0, 0, 1, 20, 200])
"""Seconds a change's `now` lags the clock: a request that read the clock before a later one
was written (or ran on a replica whose clock is behind)."""
accounts = st.integers(0, len(ACCOUNTS) - 1)

charges = st.tuples(
    st.just("charge"), accounts, st.sampled_from(UIDS), st.none() | cents, st.booleans(), skews
)
confirms = st.tuples(st.just("confirm"), st.sampled_from(UIDS), skews)
trust_ops = st.one_of(
    charges,
    charges,
    confirms,
    confirms,
    st.tuples(st.just("refund"), st.sampled_from(UIDS)),
    st.tuples(st.just("cancel"), st.sampled_from(UIDS)),
    st.tuples(st.just("quiet"), st.sampled_from(UIDS)),
    st.tuples(st.just("grant"), accounts, st.sampled_from(LEASE_IDS), cents),
    st.tuples(st.just("report"), accounts, st.sampled_from(LEASE_IDS), st.integers(1, 4), cents),
    st.tuples(st.just("close"), accounts, st.sampled_from(LEASE_IDS)),
    st.tuples(st.just("reconcile")),
    st.tuples(st.just("bad-key"), accounts),
    st.tuples(st.just("unreadable")),
    st.tuples(st.just("unreadable-entry")),
)
ships = st.tuples(
    st.just("ship"),
    st.sampled_from(RELEASES),
    st.integers(0, 15),
    st.sampled_from(["standard", "emergency"]),
    st.sampled_from([None, "", "Deployment payments/api, pod template 1"]),
    st.booleans(),
)
risk_ops = st.one_of(
    ships,
    ships,
    st.tuples(st.just("confirm"), st.sampled_from(RELEASES), skews),
    st.tuples(st.just("refund"), st.sampled_from(RELEASES)),
    st.tuples(st.just("cancel"), st.sampled_from(RELEASES)),
    st.tuples(st.just("reconcile")),
)
batches = st.one_of(
    st.tuples(st.just(TRUST), st.lists(trust_ops, min_size=1, max_size=4)),
    st.tuples(st.just(RISK), st.lists(risk_ops, min_size=1, max_size=3)),
)
advances = st.sampled_from(
    [
        timedelta(seconds=1),
        timedelta(seconds=61),
        timedelta(seconds=151),
        FORGET,
        TTL * 2,
        timedelta(minutes=40),
        timedelta(hours=1),
    ]
)


def always(_: object) -> bool:
    return True


def change_of(key: BudgetKey, op: Op, now: datetime) -> Change:
    return (_trust if key == TRUST else _risk)(op, now)


def _trust(op: Op, now: datetime) -> Change:
    kind = op[0]
    if kind == "charge":
        _, account, uid, cost, dry_run, skew = op
        at = now - timedelta(seconds=skew)
        change = charging(uid, account=ACCOUNTS[account], now=at, dry_run=dry_run, cost=cost)
        return change, lambda decision: decision.changes_ledger
    if kind == "confirm":
        return Changes.confirm(op[1], now - timedelta(seconds=op[2])), bool
    if kind == "refund":
        return _settle(refund, op[1], now), always
    if kind == "cancel":
        return Changes.undo(op[1], now), bool
    if kind == "quiet":  # changes its snapshot, yet says there is nothing to write
        return _settle(confirm, op[1], now), lambda _: False
    if kind == "grant":
        return _grant(ACCOUNTS[op[1]], op[2], op[3], now), lambda granted: granted > 0
    if kind == "report":
        return _report(ACCOUNTS[op[1]], op[2], op[3], op[4], now), lambda c: c.accepted > 0
    if kind == "close":
        return _close(ACCOUNTS[op[1]], op[2], now), lambda was_open: was_open
    if kind == "reconcile":
        return _reconcile(now), lambda outcome: outcome.changed
    if kind == "bad-key":  # refused by the engine before it changes anything
        return charging("k" * 254, account=ACCOUNTS[op[1]], now=now), always
    if kind == "unreadable-entry":
        return _unreadable_entry(now), always
    assert kind == "unreadable"
    return _unreadable(now), always


def _risk(op: Op, now: datetime) -> Change:
    kind = op[0]
    if kind == "ship":
        _, key, points, change_class, of, dry_run = op
        release = Release(key=key, points=points, change_class=change_class, of=of)
        charge = RiskCharge(BudgetKey("RiskBudget", ""), release)
        change = Changes(clock=lambda: now, ttl=TTL).risk(charge, now=now, dry_run=dry_run)
        return change, lambda decision: decision.changes_ledger
    if kind == "confirm":
        return _settle(confirm, op[1], now - timedelta(seconds=op[2])), always
    if kind == "refund":
        return _settle(refund, op[1], now), always
    if kind == "cancel":
        return Changes.undo(op[1], now), bool
    assert kind == "reconcile"
    return _reconcile(now), lambda outcome: outcome.changed


def _settle(settle: Callable[..., Any], key: str, now: datetime) -> Callable[[Budget], Any]:
    """Confirm or refund `key`, as the reconciler does when a reservation expires."""

    def change(budget: Budget) -> Any:
        assert isinstance(budget, TrustBudget | RiskBudget)
        done = settle(budget.status, key=key, now=now)
        if isinstance(budget, RiskBudget) and budget.spec.service_id in budget.status.accounts:
            summarize_risk(budget.status, budget.spec)
        return done

    return change


def _grant(account: str, lease_id: str, amount: Decimal, now: datetime) -> Callable[[Budget], Any]:
    """Lend from an account as the lease API's handshake does."""

    def change(budget: Budget) -> Decimal:
        assert isinstance(budget, TrustBudget)
        trust_account(budget.status, budget.spec, key=account, now=now)
        granted = leases.grant(
            budget.status,
            account=account,
            lease_id=lease_id,
            requested=amount,
            now=now,
            ttl=timedelta(minutes=2),
            holder=account,
            agent=account,
        )
        summarize_trust(budget.status)
        return granted

    return change


def _report(
    account: str, lease_id: str, seq: int, cost: Decimal, now: datetime
) -> Callable[[Budget], Any]:
    """Count a numbered usage report (stamped at T0: before any close, so it may be late)."""
    usage = leases.Usage(f"req-{seq}", seq, cost, int(T0.timestamp()))

    def change(budget: Budget) -> leases.Counted:
        assert isinstance(budget, TrustBudget)
        return leases.report(
            budget.status, account=account, lease_id=lease_id, usages=[usage], now=now
        )

    return change


def _close(account: str, lease_id: str, now: datetime) -> Callable[[Budget], Any]:
    """Release a lease as the lease API does."""

    def change(budget: Budget) -> bool:
        assert isinstance(budget, TrustBudget)
        hold = leases.find_lease(budget.status, account=account, lease_id=lease_id)
        was_open = hold.state == "active"
        leases.close(budget.status, account=account, lease_id=lease_id, now=now, state="released")
        summarize_trust(budget.status)
        return was_open

    return change


def _reconcile(now: datetime) -> Callable[[Budget], Any]:
    """The reconciler's pass over a budget of the embedded ledger (nobody to look for
    witnesses: what expired is confirmed)."""

    def change(budget: Budget) -> Any:
        generation = budget.metadata.generation
        if isinstance(budget, TrustBudget):
            return reconcile_trust(
                budget.status,
                budget.spec,
                budget="b",
                generation=generation,
                now=now,
                seen=None,
                samples=UsageSamples(),
            )
        assert isinstance(budget, RiskBudget)
        return reconcile_risk(
            budget.status, budget.spec, budget="b", generation=generation, now=now, seen=None
        )

    return change


def _unreadable(now: datetime) -> Callable[[Budget], Any]:
    """A change whose status would not read back (a bug, or an input the engine let
    through): refused alone, and nothing of it written."""

    def change(budget: Budget) -> str:
        assert isinstance(budget, TrustBudget)
        budget.status.releases["r" * 300] = ReleaseMark(of="", at=now)
        return "spoiled"

    return change


def _unreadable_entry(now: datetime) -> Callable[[Budget], Any]:
    """The same, in the recent entries, which a write checks apart from the maps' rows."""

    def change(budget: Budget) -> str:
        assert isinstance(budget, TrustBudget)
        record(
            budget.status, at=now, account=ACCOUNTS[0], action="reserve", amount=ZERO, key="k" * 300
        )
        return "spoiled"

    return change


# Running the same batch on two stores, and comparing what they hold.


def answer(result: Any = None, error: BaseException | None = None) -> str:
    """What a caller was told, as text taken at once (a result may be part of the budget).

    Order aside: the SQLite store reads a map's rows in key order, and its kept copy holds
    them in the order they came, where a MemStore keeps them in the order they came, so a
    pass over every account meets them in another order (as the API server, which sorts
    them, hands them back in a cluster). A reconcile's notices are compared by reason, and
    a status that would not read back by the type of error each store's own check raised.
    """
    if error is not None:
        if "does not read back" in str(error):
            return type(error).__name__
        return f"{type(error).__name__}: {error}"
    if isinstance(result, Outcome):
        reasons = sorted(notice.reason for notice in result.notices)
        return repr((result.changed, result.confirmed, result.refunded, result.unverified, reasons))
    return repr(result)


def run(store: MemStore | SQLiteStore, key: BudgetKey, changes: list[Change]) -> list[str]:
    """One change through `update_status` (a group-commit writer thread, when enabled);
    several as one batch of GroupCommit, as concurrent callers would share it."""
    if len(changes) == 1:
        change, needs_write = changes[0]
        try:
            return [answer(store.update_status(key, change, needs_write=needs_write))]
        except Exception as error:
            return [answer(error=error)]
    waiters = [Waiter(change, needs_write, math.inf, math.inf) for change, needs_write in changes]
    store.commits.commit(key, waiters)
    assert all(waiter.done for waiter in waiters)
    return [answer(waiter.result, waiter.error) for waiter in waiters]


def held(budget: Budget) -> dict[str, Any]:
    """Everything a budget's status holds, as stored (JSON types), order aside (see
    `answer`): the maps compare as dicts, the recent entries as a sorted list, and the audit
    head by its seq (`trail` checks that each store's chain ends at its own head)."""
    status: dict[str, Any] = budget.status.model_dump(mode="json", by_alias=True)
    status["entries"] = sorted(json.dumps(entry, sort_keys=True) for entry in status["entries"])
    status["auditHead"] = status["auditHead"]["seq"]
    return status


def alone(status: dict[str, Any]) -> dict[str, Any]:
    """`status` as `get(key, account=...)` answers in every store: the embedded ledger
    reads no row of the other maps (from a ledger in the layout before rows it has them all),
    where a MemStore and the cluster's store keep them."""
    return {
        name: value for name, value in status.items() if name not in KEYED or name == "accounts"
    }


def trail(lines: Sequence[str], budget: Budget) -> list[str]:
    """The audit records of one budget, checked to form one chain of its uid that ends at
    its head, without their links (see `held`), sorted."""
    records = [json.loads(line) for line in lines]
    records = sorted(
        (record for record in records if record["budget"] == str(BudgetKey.of(budget))),
        key=lambda record: record["seq"],
    )
    assert {record["uid"] for record in records} <= {budget.metadata.uid}
    for before, after in itertools.pairwise(records):
        assert (after["seq"], after["prev"]) == (before["seq"] + 1, before["hash"])
    if records:
        assert isinstance(budget.status, Ledger)
        head = budget.status.audit_head
        assert (head.seq, head.hash) == (records[-1]["seq"], records[-1]["hash"])
    links = ("seq", "prev", "hash")
    return sorted(
        json.dumps({name: value for name, value in record.items() if name not in links})
        for record in records
    )


def write_old_layout(path: Path, statuses: dict[BudgetKey, Budget]) -> None:
    """Store each budget's whole status in its row and none in status_rows, as every
    BudgetOps before rows did (and as test_ledger_rows.write_old_layout does for one)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for key, budget in statuses.items():
            where = (key.kind, key.namespace, key.name)
            db.execute(
                "UPDATE budgets SET status = ?, version = version + 1 "
                "WHERE kind = ? AND namespace = ? AND name = ?",
                (budget.status.model_dump_json(by_alias=True, exclude_none=True), *where),
            )
            db.execute(
                "DELETE FROM status_rows WHERE kind = ? AND namespace = ? AND name = ?", where
            )


class Pair:
    """An honest MemStore and a SQLiteStore on a file, fed the same changes at the same
    clock; `check` says they hold the same."""

    def __init__(self, folder: Path, *, group_commit: bool, check_writes: bool) -> None:
        self.path = folder / "ledger.sqlite3"
        self.now = T0
        self.mem = MemStore(group_commit=group_commit)
        self.sql = SQLiteStore(self.path, group_commit=group_commit, check_writes=check_writes)
        for budget in (trust_budget(), risk_budget()):
            self.mem.apply(self.sql.apply(budget))  # with the uid the file gave it

    def batch(self, key: BudgetKey, ops: list[Op], *, through: SQLiteStore | None = None) -> None:
        """The same changes to both (to the file through `through`, another process's
        store, if given); each caller is told the same."""
        told = run(self.mem, key, [change_of(key, op, self.now) for op in ops])
        heard = run(through or self.sql, key, [change_of(key, op, self.now) for op in ops])
        assert heard == told, ops

    def reopen(self, *, group_commit: bool, check_writes: bool) -> None:
        self.sql.close()
        self.sql = SQLiteStore(self.path, group_commit=group_commit, check_writes=check_writes)

    def to_old_layout(self) -> None:
        write_old_layout(self.path, {key: self.sql.get(key) for key in KEYS})

    def check(self, store: SQLiteStore | None = None) -> None:
        """Each budget reads the same from the MemStore and the file (through `store`, if
        given) by `get`, `list` and `get(key, account=...)`, its books balance, and its
        audit trail is the same (order aside, see `answer`); the copy the SQLite store keeps
        for its next write, if any, holds what the file does."""
        store = store or self.sql
        versions = store.versions()
        lines = store.audit_lines()
        assert store.unreadable() == {}
        listed = [held(budget) for budget in store.list()]
        assert listed == [held(budget) for budget in self.mem.list()]
        for key in KEYS:
            want, got = self.mem.get(key), store.get(key)
            assert held(got) == held(want), key
            assert isinstance(got.status, Ledger)
            assert isinstance(want.status, Ledger)
            assert audit(got.status) == []
            assert trail(lines, got) == trail(self.mem.audit, want), key
            for account in (*sorted(want.status.accounts)[:2], "user:nobody"):
                one = alone(held(store.get(key, account=account)))
                assert one == alone(held(self.mem.get(key, account=account))), account
            kept = store._decoded.get(key, versions[key])
            if kept is not None:
                assert held(kept) == held(want), f"{key}: the kept copy drifted from the file"


class RowsMachine(RuleBasedStateMachine):
    """Random batches of changes, clock moves, reopenings, other processes and old-layout
    rewrites, on a Pair."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="rows-equivalence-"))
        self.pair: Pair | None = None

    @initialize(group_commit=st.booleans(), check_writes=st.booleans())
    def start(self, group_commit: bool, check_writes: bool) -> None:
        self.pair = Pair(self.folder, group_commit=group_commit, check_writes=check_writes)

    def teardown(self) -> None:
        if self.pair is not None:
            self.pair.sql.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def p(self) -> Pair:
        assert self.pair is not None
        return self.pair

    @rule(batch=batches, by=st.none() | advances)
    def changes(self, batch: tuple[BudgetKey, list[Op]], by: timedelta | None) -> None:
        """A batch, after the clock moved `by`, if given."""
        self.p.now += by or timedelta(0)
        self.p.batch(*batch)

    @rule(group_commit=st.booleans(), check_writes=st.booleans())
    def reopen(self, group_commit: bool, check_writes: bool) -> None:
        self.p.reopen(group_commit=group_commit, check_writes=check_writes)

    @rule(batch=batches)
    def another_process_writes(self, batch: tuple[BudgetKey, list[Op]]) -> None:
        other = SQLiteStore(self.p.path)
        try:
            self.p.batch(*batch, through=other)
        finally:
            other.close()

    @rule()
    def another_process_reads(self) -> None:
        reader = SQLiteStore(self.p.path, mode="ro")
        try:
            self.p.check(reader)
        finally:
            reader.close()

    @rule(balance=st.sampled_from(["0.50", "1.00", "3.00"]))
    def spec_changes(self, balance: str) -> None:
        """A new initialBalance: each account follows it on its next touch."""
        for store in (self.p.mem, self.p.sql):
            store.apply(trust_budget(balance))

    @rule(reopen=st.booleans())
    def old_layout(self, reopen: bool) -> None:
        """An older BudgetOps wrote the ledger (this store open or not, as an upgrade)."""
        self.p.to_old_layout()
        if reopen:
            self.p.reopen(group_commit=False, check_writes=False)

    @invariant()
    def same_everywhere(self) -> None:
        if self.pair is not None:
            self.pair.check()


TestRowsMachine = RowsMachine.TestCase
TestRowsMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

steps = st.one_of(batches, advances)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    count=st.integers(1, len(ACCOUNTS)),
    after=st.lists(steps, min_size=1, max_size=30),
    group_commit=st.booleans(),
    reopen=st.booleans(),
)
def test_a_ledger_in_the_layout_before_rows_goes_on_as_an_honest_store(
    count: int, after: list[Any], group_commit: bool, reopen: bool
) -> None:
    """A ledger written whole in its budget's row (every BudgetOps before rows), with
    entries in each of the maps that are rows now, opened by this one or rewritten under
    it, then driven by random changes, holds what a MemStore fed the same changes does,
    at every step. (RowsMachine also rewrites random states into that layout.)"""
    with tempfile.TemporaryDirectory(prefix="rows-old-layout-") as folder:
        pair = Pair(Path(folder), group_commit=group_commit, check_writes=False)
        try:
            _fill(pair, count)
            pair.to_old_layout()
            if reopen:
                pair.reopen(group_commit=group_commit, check_writes=False)
            with contextlib.closing(sqlite3.connect(pair.path)) as db:
                assert db.execute("SELECT count(*) FROM status_rows").fetchone() == (0,)
                inline = [
                    json.loads(status) for (status,) in db.execute("SELECT status FROM budgets")
                ]
            assert all(any(status.get(name) for status in inline) for name in KEYED)
            pair.check()
            for step in after:
                _step(pair, step)
                pair.check()
        finally:
            pair.sql.close()


def _fill(pair: Pair, count: int) -> None:
    """Entries in every map kept as rows: `count` accounts, settled keys, a release id,
    an alerting account."""
    charges = [("charge", n, f"fill-{n}", None, False, 0) for n in range(count)]
    pair.batch(TRUST, [*charges, ("charge", 0, "fill-low", Decimal("0.70"), False, 0)])
    pair.batch(TRUST, [("confirm", f"fill-{n}", 0) for n in range(0, count, 2)] + [("reconcile",)])
    pair.batch(RISK, [("ship", RELEASES[0], 3, "standard", "Deployment payments/api", False)])
    pair.batch(RISK, [("ship", RELEASES[1], 2, "standard", None, False)])
    pair.batch(RISK, [("confirm", RELEASES[1], 0)])


def _step(pair: Pair, step: Any) -> None:
    if isinstance(step, timedelta):
        pair.now += step
    else:
        pair.batch(*step)


def test_an_account_that_stops_alerting_loses_its_row(tmp_path: Path) -> None:
    """A reconcile pass replaces the alerting map whole: an account no longer in it is a
    row to drop (the random machine reaches this only now and then)."""
    pair = Pair(tmp_path, group_commit=False, check_writes=False)
    try:
        pair.batch(TRUST, [("charge", 1, "uid-1", Decimal("0.90"), False, 0), ("reconcile",)])
        pair.batch(TRUST, [("charge", 2, "uid-2", Decimal("0.95"), False, 0), ("reconcile",)])
        assert set(held(pair.sql.get(TRUST))["alerting"]) == {ACCOUNTS[1], ACCOUNTS[2]}
        pair.batch(TRUST, [("refund", "uid-1"), ("reconcile",)])
        pair.check()
        pair.now += timedelta(hours=1)
        pair.batch(TRUST, [("reconcile",)])
        pair.check()
        assert held(pair.sql.get(TRUST))["alerting"] == {}
    finally:
        pair.sql.close()


def test_a_budget_deleted_and_applied_again_holds_none_of_its_old_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget())
    store.update_status(TRUST, charging("uid-1", account=ACCOUNTS[1], now=T0))
    store.update_status(TRUST, Changes.confirm("uid-1", T0))
    assert store.delete(TRUST)
    store.apply(trust_budget())
    assert held(store.get(TRUST)) == held(trust_budget())
    assert held(store.get(TRUST, account=ACCOUNTS[1])) == held(trust_budget())


def test_a_budget_deleted_and_applied_again_can_be_charged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget())
    store.update_status(TRUST, charging("uid-1", account=ACCOUNTS[1], now=T0))
    store.delete(TRUST)
    store.apply(trust_budget())
    decision = store.update_status(TRUST, charging("uid-2", account=ACCOUNTS[1], now=T0))
    assert decision.reason == "Charged"


def test_a_key_settled_by_a_clock_behind_is_forgotten_as_an_honest_store_forgets_it(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path, group_commit=False, check_writes=False)
    try:
        pair.batch(TRUST, [("charge", 1, "uid-a", None, False, 0)])
        pair.batch(TRUST, [("charge", 2, "uid-b", None, False, 0)])
        pair.batch(TRUST, [("confirm", "uid-b", 0)])
        pair.batch(TRUST, [("confirm", "uid-a", 200)])  # its request read the clock earlier
        pair.check()
        pair.now += timedelta(seconds=1)  # uid-a is past KEY_KEPT and due to go; uid-b is not
        pair.batch(TRUST, [("charge", 3, "uid-c", None, False, 0)])
        pair.check()
    finally:
        pair.sql.close()
