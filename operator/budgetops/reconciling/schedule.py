"""When each budget is reconciled: a queue of due instants fed by the reconciles themselves
and by the store's watch, drained by a bounded pool of threads.

One scheduler for every budget, instead of a task or daemon per budget: a budget costs one
heap entry while it waits, so 10,000 budgets wait as cheaply as ten, and nothing polls.
"""

from __future__ import annotations

import functools
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Final, Protocol

from budgetops.apis.resources import BudgetKey
from budgetops.store.base import Unreadable

log = logging.getLogger("budgetops.schedule")

LOOK_FOR_STOP = 0.5
"""Seconds between checks of the stop flag while nothing is due."""

PASS_SHARE = 0.2
"""At most this share of a worker's time goes to one budget that is woken again and again:
a wake waits four times its last pass (or `spacing`, if longer). A pass reads every account,
1.6 s at 100,000 in the embedded ledger; without this, a budget charged all the time would
keep a worker (and the ledger's writer) busy reconciling it for most of each second."""


class StopFlag(Protocol):
    """`threading.Event` and kopf's `DaemonStopped` both answer these."""

    def is_set(self) -> bool: ...


class Ticks(Protocol):
    """The scheduler's time: monotonic seconds, and a wait that the next due instant ends.

    Not the engine's `Clock` (engine/clock.py), which is wall time to the second: due
    instants need a clock that never steps back, and waits shorter than a second.
    `MONOTONIC` is the real one; tests pass one they move by hand, so that none of them
    sleeps to see a budget fall due.
    """

    def now(self) -> float: ...

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        """Called holding `changed`: release it until it is notified or `timeout` seconds of
        this clock have passed (returning sooner is allowed), then hold it again."""
        ...


class _Monotonic:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        changed.wait(timeout)


MONOTONIC: Final[Ticks] = _Monotonic()
"""`time.monotonic`, and `Condition.wait` with a real timeout."""


class DueQueue:
    """Keys by the monotonic instant they are due; each key at most once, at its earliest.

    A heap with lazy deletion: moving a key earlier pushes a new entry and leaves the old
    one to be skipped when it surfaces.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, BudgetKey]] = []
        self._due: dict[BudgetKey, float] = {}
        self._pushed = 0

    def __len__(self) -> int:
        return len(self._due)

    def no_later_than(self, key: BudgetKey, when: float) -> None:
        """Due at `when`, or earlier if it already was."""
        held = self._due.get(key)
        if held is not None and held <= when:
            return
        self._due[key] = when
        self._pushed += 1
        heapq.heappush(self._heap, (when, self._pushed, key))

    def discard(self, key: BudgetKey) -> None:
        self._due.pop(key, None)

    def pop_due(self, now: float) -> list[BudgetKey]:
        """Every key due at or before `now`, earliest first, removed from the queue."""
        found: list[BudgetKey] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == when:
                del self._due[key]
                found.append(key)
        return found

    def next_at(self) -> float | None:
        """When the earliest key is due (None: nothing waits)."""
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


class Scheduler:
    """Calls `reconcile(key)` for every budget when it is due, never twice at once for a key.

    `reconcile` returns how long until the budget wants another look (None: it is gone).
    `wake(key)` (a store listener, called on watch threads) makes a budget due now, but no
    sooner than `spacing` after its last reconcile ended, nor sooner than its last pass
    allows (PASS_SHARE): a budget admission charges hundreds of times a second is still
    reconciled at a calm pace, however many accounts it has. A wake while its
    reconcile runs makes it due again after that one, so no change seen mid-run is missed.
    """

    def __init__(
        self,
        reconcile: Callable[[BudgetKey], timedelta | None],
        keys: Callable[[], Iterable[BudgetKey]],
        *,
        workers: int = 16,
        spacing: timedelta = timedelta(seconds=2),
        retry: timedelta = timedelta(seconds=2),
        failed: Callable[[BudgetKey], None] = lambda _: None,
        clock: Ticks = MONOTONIC,
    ) -> None:
        self._reconcile = reconcile
        self._keys = keys
        self._workers = workers
        self._spacing = spacing.total_seconds()
        self._retry = retry
        self._failed = failed
        self._clock = clock
        self._changed = threading.Condition()
        self._queue = DueQueue()
        self._running: set[BudgetKey] = set()
        self._again: set[BudgetKey] = set()
        self._ended: dict[BudgetKey, float] = {}
        self._started: dict[BudgetKey, float] = {}
        self._gap: dict[BudgetKey, float] = {}

    def _woken(self, key: BudgetKey) -> None:
        ended = self._ended.get(key)
        now = self._clock.now()
        gap = self._gap.get(key, self._spacing)
        self._queue.no_later_than(key, now if ended is None else max(now, ended + gap))

    def wake(self, key: BudgetKey) -> None:
        with self._changed:
            self._woken(key)
            self._changed.notify()

    def run(self, stop: StopFlag) -> None:
        """Reconcile until `stop` is set: every known budget at once, then each when due."""
        with self._changed:
            for key in self._keys():
                self._queue.no_later_than(key, self._clock.now())
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="reconcile")
        try:
            while not stop.is_set():
                with self._changed:
                    for key in self._queue.pop_due(self._clock.now()):
                        if key in self._running:
                            self._again.add(key)
                            continue
                        self._running.add(key)
                        self._started[key] = self._clock.now()
                        pool.submit(self._reconcile, key).add_done_callback(
                            functools.partial(self._finish, key)
                        )
                    self._clock.wait(self._changed, self._wait())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            with self._changed:
                for key in self._running:  # cancelled before they ran: due when next led
                    self._queue.no_later_than(key, self._clock.now())
                self._running.clear()
                self._again.clear()

    def _wait(self) -> float:
        due = self._queue.next_at()
        if due is None:
            return LOOK_FOR_STOP
        return min(LOOK_FOR_STOP, max(due - self._clock.now(), 0.0))

    def _finish(self, key: BudgetKey, done: Future[timedelta | None]) -> None:
        if done.cancelled():
            return
        try:
            delay = done.result()
        except Unreadable as error:  # retried when its stored form changes: the watch wakes it
            log.error("not reconciling %s until it is fixed: %s", key, error)
            self._failed(key)
            delay = None
        except Exception:
            log.exception("reconciling %s failed; trying again in %s", key, self._retry)
            self._failed(key)
            delay = self._retry
        with self._changed:
            self._running.discard(key)
            now = self._ended[key] = self._clock.now()
            took = now - self._started.pop(key, now)
            self._gap[key] = max(self._spacing, took * (1 / PASS_SHARE - 1))
            if key in self._again:
                self._again.discard(key)
                self._woken(key)
            elif delay is None:
                self._queue.discard(key)
                del self._ended[key], self._gap[key]
            if delay is not None:
                self._queue.no_later_than(key, now + delay.total_seconds())
            self._changed.notify()
