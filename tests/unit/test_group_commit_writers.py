"""Group commit's writer threads stay: a writer woken for a budget another writer took
first waits again. One that ended instead was a new thread, and (the embedded ledger) a new
SQLite connection, a few batches later: 123 threads in 3 s on one hot budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from budgetops.apis.resources import Budget, BudgetKey
from budgetops.store.commit import Apply, GroupCommit

KEY = BudgetKey("TrustBudget", "hot")
CLIENTS = 8
CALLS = 300
WRITE_SECONDS = 0.0005
"""A write's I/O, during which the clients run (and queue the next batch)."""


def test_one_hot_budget_is_written_by_a_writer_or_two_however_many_batches() -> None:
    writers: list[threading.Thread] = []  # kept: a thread's ident is reused once it ended

    def attempt(key: BudgetKey, fresh: bool, apply: Apply) -> bool:
        current = threading.current_thread()
        if current not in writers:
            writers.append(current)
        apply(object())  # type: ignore[arg-type]  # group commit serves any object
        time.sleep(WRITE_SECONDS)
        return True

    commits = GroupCommit(attempt)
    change: Callable[[Budget], bool] = lambda budget: True  # noqa: E731

    def client() -> None:
        for _ in range(CALLS):
            assert commits.submit(KEY, change, timeout=30, needs_write=bool)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert commits.stats.charges == CLIENTS * CALLS
    assert len(writers) <= 3, f"{len(writers)} writer threads for one budget"
