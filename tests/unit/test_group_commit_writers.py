"""Group commit on one hot budget: its writer threads stay, and its batches are full.

A writer woken for a budget another writer took first waits again. One that ended instead
was a new thread, and (the embedded ledger) a new SQLite connection, a few batches later:
123 threads in 3 s. And after a batch of many, the writer lets the callers it answered queue
their next changes before it takes the next batch: each batch costs a transaction."""

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


def hammered(attempt: Callable[[], None] = lambda: None) -> GroupCommit:
    """A GroupCommit after CLIENTS threads made CALLS changes each to KEY, one at a time,
    each write calling `attempt` and taking WRITE_SECONDS."""

    def write(key: BudgetKey, fresh: bool, apply: Apply) -> bool:
        attempt()
        apply(object())  # type: ignore[arg-type]  # group commit serves any object
        time.sleep(WRITE_SECONDS)
        return True

    commits = GroupCommit(write)
    change: Callable[[Budget], int] = lambda budget: sum(range(300))  # noqa: E731

    def client() -> None:
        for _ in range(CALLS):
            commits.submit(KEY, change, timeout=30, needs_write=bool)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert commits.stats.charges == CLIENTS * CALLS
    return commits


def test_one_hot_budget_is_written_by_a_writer_or_two_however_many_batches() -> None:
    writers: list[threading.Thread] = []  # kept: a thread's ident is reused once it ended

    def note_writer() -> None:
        if threading.current_thread() not in writers:
            writers.append(threading.current_thread())

    hammered(note_writer)
    assert len(writers) <= 3, f"{len(writers)} writer threads for one budget"


def test_a_batch_after_a_batch_of_many_takes_the_callers_it_answered() -> None:
    """Taken at once, batches held 3.9 changes of 8 callers; 6.7 once callers get to run."""
    stats = hammered().stats
    assert stats.charges / stats.batches >= 5
