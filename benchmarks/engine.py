"""Decisions per second of decide+reserve: the pure engine, then the SQLite store.

One hot account, as when one user or one CI system issues as fast as it can. A watch
confirms reservations a moment after they are made; the benchmark does the same inside
the charge (keeping at most `PENDING` reservations open) so the status stays the size it
has in production instead of growing without bound.

Run: python benchmarks/engine.py [--seconds 3]
Prints each figure, its ratio to the pure engine measured in this same run, and the target.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.charges import TrustCharge
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import audit, confirm
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.charging import Changes

PENDING = 64
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TTL = timedelta(minutes=5)
KEY = BudgetKey("TrustBudget", "hot")
TARGET_ENGINE = 100_000
TARGET_SQLITE = 3_000


def hot_budget() -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": "hot"},
            "spec": {
                "subjects": {"patterns": ["*"]},
                "match": [{"resource": "certificatesigningrequests"}],
                "initialBalance": 1_000_000_000,
                "resetInterval": "24h",
            },
        }
    )


CHANGES = Changes(clock=lambda: NOW, ttl=TTL)


def decide_and_reserve(budget: TrustBudget, uid: str) -> Decision:
    """Exactly what admission does per request: decide, and reserve when allowed (the
    change `usecases.charging` builds for one issuance)."""
    return CHANGES.trust(TrustCharge(KEY, "user:hot", Decimal(1), uid, uid), now=NOW)(budget)


def charge_and_settle(budget: Budget, uid: str) -> Decision:
    """decide+reserve one issuance; confirm the oldest reservation as the watch would."""
    assert isinstance(budget, TrustBudget)
    decision = decide_and_reserve(budget, uid)
    held = budget.status.accounts["user:hot"].reservations
    if len(held) > PENDING:
        confirm(budget.status, key=next(iter(held)), now=NOW)
    return decision


def rate(run: Callable[[int], None], seconds: float) -> float:
    """Calls per second of `run(i)` over about `seconds`, after a short warm-up."""
    for i in range(200):
        run(-i - 1)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            run(count)
            count += 1
    return count / (time.perf_counter() - start)


def pure_engine(seconds: float, *, settle: bool) -> float:
    """Without confirms, reservations pile up; a fresh budget every 10,000 decisions keeps the
    measurement about deciding, not about the garbage collector walking 300,000 of them."""
    budgets = [hot_budget()]
    step = charge_and_settle if settle else decide_and_reserve

    def run(i: int) -> None:
        if not settle and i % 10_000 == 0:
            budgets.append(hot_budget())
        step(budgets[-1], f"uid-{i}")

    result = rate(run, seconds)
    assert all(audit(b.status) == [] for b in budgets)
    return result


def _sqlite_writer(path: str, writer: int, seconds: float, counts: list[int]) -> None:
    store = SQLiteStore(path)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        store.update_status(KEY, lambda b, c=count: charge_and_settle(b, f"w{writer}-{c}"))
        count += 1
    counts[writer] = count


def sqlite_store(writers: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "ledger.sqlite3")
        store = SQLiteStore(path)
        store.apply(hot_budget())
        with multiprocessing.Manager() as manager:
            counts = manager.list([0] * writers)
            processes = [
                multiprocessing.Process(target=_sqlite_writer, args=(path, w, seconds, counts))
                for w in range(writers)
            ]
            start = time.perf_counter()
            for process in processes:
                process.start()
            for process in processes:
                process.join()
            elapsed = time.perf_counter() - start
            total = sum(counts)
        final = store.get(KEY)
        assert isinstance(final, TrustBudget)
        account = final.status.accounts["user:hot"]
        assert audit(final.status) == [], audit(final.status)
        assert account.spent + account.reserved == total, "every admitted charge is on the books"
        return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    engine = pure_engine(args.seconds, settle=False)
    rows = [
        ("pure engine: decide+reserve", engine, TARGET_ENGINE),
        ("pure engine: + confirm (steady state)", pure_engine(args.seconds, settle=True), 0),
    ]
    for writers in (1, 8):
        rows.append(
            (
                f"SQLite store + confirm, {writers} process(es)",
                sqlite_store(writers, args.seconds),
                TARGET_SQLITE,
            )
        )
    print(f"{'what':<40}{'decisions/s':>14}{'vs engine':>11}{'target':>10}  met")
    for name, value, target in rows:
        met = ("yes" if value >= target else "NO") if target else "-"
        print(f"{name:<40}{value:>14,.0f}{value / engine:>10.3f}x{target or '-':>10}  {met}")


if __name__ == "__main__":
    main()
