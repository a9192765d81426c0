"""Group commit: many concurrent charges to one budget, one read and one write per batch.

One writer thread per budget (started on demand, gone when idle) drains the waiting
changes, applies them in order to one snapshot, persists once and answers every waiter.
A waiter whose answer needs no write (a denial, a replay, a dry run) is answered from the
first attempt and never re-run, so a denied request can never be admitted by another
waiter's retry. Every wait is bounded by its caller's deadline.

How a batch is read and persisted is the store's business: it hands in an `attempt`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from budgetops.apis.resources import Budget
from budgetops.store.base import BudgetKey, ChargeTimeout, NotFound

T = TypeVar("T")

IDLE_WRITER_SECONDS = 2.0
BACKOFF_SECONDS = 0.002
"""Base of the jittered pause after a conflict; it grows with each conflict up to 50 ms.

Without it the replica that just won keeps winning: its next batch starts from its own cache
at once, while the loser is still reading the budget back from the API server."""


@dataclass
class Waiter:
    """One caller's change, its deadline, and where its answer goes."""

    change: Callable[[Budget], Any]
    needs_write: Callable[[Any], bool]
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


Writers = list[tuple[Waiter, Any]]
Apply = Callable[[Budget], Writers]
Attempt = Callable[[BudgetKey, bool, Apply], bool]
"""attempt(key, fresh, apply): read the budget (afresh if `fresh`), run `apply` on it, and
persist it if `apply` returned any writers. True when done, False on a write conflict."""


@dataclass
class _Lane:
    """The queue of one budget and whether its writer thread is running."""

    queue: list[Waiter] = field(default_factory=list)
    running: bool = False
    wake: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class Stats:
    """Counters the metrics layer exports: batches, their sizes, conflicts.

    Writer threads of different budgets update them, so updates go through `count`.
    """

    batches: int = 0
    charges: int = 0
    conflicts: int = 0
    largest_batch: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, written: int = 0, conflicts: int = 0) -> None:
        with self._lock:
            if written:
                self.batches += 1
                self.charges += written
                self.largest_batch = max(self.largest_batch, written)
            self.conflicts += conflicts


class GroupCommit:
    """Batches status changes per budget and persists each batch with one `attempt`."""

    def __init__(self, attempt: Attempt, *, enabled: bool = True) -> None:
        self.attempt = attempt
        self.enabled = enabled
        self.stats = Stats()
        self._lanes: dict[BudgetKey, _Lane] = {}
        self._lanes_lock = threading.Lock()

    def submit(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float,
        needs_write: Callable[[T], bool],
    ) -> T:
        """Queue `change` for `key` and wait for its answer; ChargeTimeout past `timeout`."""
        waiter = Waiter(change, needs_write, time.monotonic() + timeout)
        if not self.enabled:
            self.commit(key, [waiter])
        else:
            with self._lanes_lock:
                lane = self._lanes.setdefault(key, _Lane())
            with lane.wake:
                lane.queue.append(waiter)
                if not lane.running:
                    lane.running = True
                    threading.Thread(
                        target=self._drain, args=(key, lane), daemon=True, name=f"commit-{key}"
                    ).start()
                lane.wake.notify()
        if not waiter.done.wait(max(0.0, waiter.deadline - time.monotonic())):
            raise ChargeTimeout(f"{key} could not be charged within {timeout:.1f}s")
        if waiter.error is not None:
            raise waiter.error
        result: T = waiter.result
        return result

    def _drain(self, key: BudgetKey, lane: _Lane) -> None:
        """The writer of one budget: take everything queued, commit it as one batch, repeat."""
        while True:
            with lane.wake:
                if not lane.queue:
                    lane.wake.wait(IDLE_WRITER_SECONDS)
                if not lane.queue:
                    lane.running = False
                    return
                batch, lane.queue = lane.queue, []
            try:
                self.commit(key, batch)
            except BaseException as error:  # never leave a waiter hanging
                for waiter in batch:
                    if not waiter.done.is_set():
                        waiter.answer(error=error)

    @staticmethod
    def _apply(pending: list[Waiter], budget: Budget) -> Writers:
        """Run each change in order on `budget`; answer those that need no write right away."""
        writers = []
        for waiter in pending:
            try:
                result = waiter.change(budget)
            except Exception as error:
                waiter.answer(error=error)
                continue
            if waiter.needs_write(result):
                writers.append((waiter, result))
            else:
                waiter.answer(result)
        return writers

    def commit(self, key: BudgetKey, batch: list[Waiter]) -> None:
        """Apply and persist one batch, retrying on conflict with only its writers, until
        each waiter's own deadline: that, not a count of attempts, bounds the retries."""
        pending = batch
        fresh = False
        conflicts = 0
        while True:
            now = time.monotonic()
            for waiter in pending:
                if waiter.deadline <= now:
                    waiter.answer(error=ChargeTimeout(f"{key} could not be charged in time"))
            pending = [w for w in pending if not w.done.is_set()]
            if not pending:
                return
            writers: Writers = []

            def apply(
                budget: Budget, todo: list[Waiter] = pending, found: Writers = writers
            ) -> Writers:
                found[:] = self._apply(todo, budget)  # the attempt may run it once at most
                return found

            try:
                done = self.attempt(key, fresh, apply)
            except NotFound as missing:
                for waiter in pending:
                    waiter.answer(error=missing)
                return
            if done:
                if writers:
                    self.stats.count(written=len(writers))
                for waiter, result in writers:
                    waiter.answer(result)
                return
            self.stats.count(conflicts=1)
            pending = [waiter for waiter, _ in writers]
            fresh = True
            conflicts += 1
            pause = random.uniform(0, min(BACKOFF_SECONDS * conflicts, 0.05))
            time.sleep(min(pause, max(0.0, min(w.deadline for w in pending) - time.monotonic())))
