"""The due queue and the scheduler that drains it (threads, but no API server).

The scheduler runs on a `ManualClock`: a test moves time itself instead of sleeping until a
budget falls due, and a stop is seen at once instead of at the next look for it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from budgetops.apis.resources import BudgetKey
from budgetops.reconciling.schedule import LOOK_FOR_STOP, PASS_SHARE, DueQueue, Scheduler
from budgetops.store.base import Unreadable
from tests.waiting import eventually

A, B, C = (BudgetKey("RiskBudget", name, "default") for name in "abc")


def test_due_queue_gives_keys_earliest_first_and_each_once() -> None:
    queue = DueQueue()
    queue.no_later_than(A, 30.0)
    queue.no_later_than(B, 10.0)
    queue.no_later_than(C, 20.0)
    queue.no_later_than(A, 5.0)  # earlier wins
    queue.no_later_than(B, 50.0)  # later is ignored
    assert (len(queue), queue.next_at()) == (3, 5.0)
    assert queue.pop_due(15.0) == [A, B]
    assert queue.pop_due(15.0) == []
    assert queue.pop_due(100.0) == [C]
    assert queue.next_at() is None


def test_due_queue_forgets_discarded_keys_even_when_their_entry_surfaces() -> None:
    queue = DueQueue()
    queue.no_later_than(A, 1.0)
    queue.no_later_than(B, 2.0)
    queue.discard(A)
    assert queue.next_at() == 2.0
    assert queue.pop_due(10.0) == [B]
    assert len(queue) == 0


Busy = tuple[Callable[[], bool], ...]
"""Checks that something the scheduler started is still under way."""


def _any(busy: Busy) -> bool:
    return any(check() for check in busy)


class ManualClock:
    """The scheduler's `Ticks`, moved by the test: a wait ends when its condition is notified,
    and every move notifies each condition waited on (a wait may end early: the scheduler
    looks again)."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()
        self._conditions: list[threading.Condition] = []
        self.waiting = False  # the scheduler is inside `wait`: it has nothing to do now
        self.waits = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        if timeout <= 0:
            return
        with self._lock:
            if changed not in self._conditions:
                self._conditions.append(changed)
            self.waiting = True
            self.waits += 1
        try:
            changed.wait(1.0)  # a lost notify costs a second, never a hang
        finally:
            self.waiting = False

    def advance(self, seconds: float) -> None:
        """Move time on and let every waiter look at it."""
        with self._lock:
            self._now += seconds
            conditions = list(self._conditions)
        for changed in conditions:  # taken after the move: a waiter reads the new time
            with changed:
                changed.notify_all()

    def drive(
        self, check: Callable[[], bool], *, step: float, within: float, busy: Busy = ()
    ) -> None:
        """Move time on by `step` until `check()` holds, each time once the scheduler has
        looked at the new time and nothing in `busy` is; fail once `within` seconds of this
        clock have passed without it."""
        start = self.now()
        while not check():
            assert self.now() - start < within, f"not reached within {within:g} s of the clock"
            waits = self.waits
            self.advance(step)
            eventually(functools.partial(self._looked, check, since=waits, busy=busy), every=0.001)

    def _looked(self, check: Callable[[], bool], *, since: int, busy: Busy) -> bool:
        """`check()` holds, or the scheduler has waited again since its `since`-th wait
        with nothing in `busy`: it has seen the new time."""
        return check() or (self.waiting and self.waits > since and not _any(busy))

    def settle(self, busy: Busy = ()) -> None:
        """Return once the scheduler waits with nothing in hand, the same wait for a few ms."""
        quiet = 0
        last = -1
        deadline = time.monotonic() + 5
        while quiet < 3:
            assert time.monotonic() < deadline, "the scheduler did not settle within 5 s"
            if self.waiting and self.waits == last and not _any(busy):
                quiet += 1
            else:
                quiet = 0
            last = self.waits
            time.sleep(0.003)


class Recorder:
    """A reconcile that counts calls per key and checks no key runs twice at once."""

    def __init__(
        self,
        answer: Callable[[BudgetKey, int], timedelta | None],
        clock: ManualClock,
    ) -> None:
        self.answer = answer
        self.clock = clock
        self.calls: Counter[BudgetKey] = Counter()
        self.spans: list[tuple[float, float]] = []  # (start, end) of every call
        self.running: set[BudgetKey] = set()
        self.overlaps = 0
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()

    def __call__(self, key: BudgetKey) -> timedelta | None:
        started = self.clock.now()
        with self.lock:
            self.overlaps += key in self.running
            self.running.add(key)
            self.calls[key] += 1
            call = self.calls[key]
        self.hold.wait(5)
        with self.lock:
            self.running.discard(key)
            self.spans.append((started, self.clock.now()))
        return self.answer(key, call)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.running)


@contextmanager
def running(scheduler: Scheduler, clock: ManualClock) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    eventually(lambda: clock.waiting, every=0.002)  # its condition is known to the clock
    try:
        yield
    finally:
        stop.set()
        clock.advance(LOOK_FOR_STOP)
        thread.join(5)
        assert not thread.is_alive(), "the scheduler did not stop within 5 s"


def test_every_budget_is_reconciled_at_start_then_when_it_asks() -> None:
    # A asks again in 50 ms twice, then is gone; B waits an hour; C is gone at once.
    def answer(key: BudgetKey, call: int) -> timedelta | None:
        if key == A and call < 3:
            return timedelta(milliseconds=50)
        return timedelta(hours=1) if key == B else None

    clock = ManualClock()
    recorder = Recorder(answer, clock)
    with running(Scheduler(recorder, lambda: [A, B, C], workers=4, clock=clock), clock):
        clock.drive(lambda: recorder.calls[A] == 3, step=0.05, within=60, busy=(recorder.busy,))
        clock.advance(0.2)
        clock.settle((recorder.busy,))
    assert recorder.calls == Counter({A: 3, B: 1, C: 1})
    assert recorder.overlaps == 0


def test_a_wake_during_a_reconcile_runs_it_once_more_after() -> None:
    clock = ManualClock()
    recorder = Recorder(lambda key, call: timedelta(hours=1), clock)
    scheduler = Scheduler(recorder, lambda: [A], workers=4, spacing=timedelta(0), clock=clock)
    recorder.hold.clear()
    with running(scheduler, clock):
        eventually(lambda: A in recorder.running)
        waits = clock.waits
        for _ in range(5):  # the watch reports several changes meanwhile
            scheduler.wake(A)
        eventually(lambda: clock.waiting and clock.waits > waits)  # seen while A still runs
        recorder.hold.set()
        eventually(lambda: recorder.calls[A] == 2)
        clock.advance(0.2)
        clock.settle((recorder.busy,))
    assert (recorder.calls[A], recorder.overlaps) == (2, 0)


def test_a_failed_reconcile_is_counted_and_retried() -> None:
    failures: list[BudgetKey] = []

    def flaky(key: BudgetKey) -> timedelta | None:
        if not failures:
            failures.append(key)
            raise RuntimeError("the API server went away")
        return None

    calls: list[BudgetKey] = []

    def reconcile(key: BudgetKey) -> timedelta | None:
        calls.append(key)
        return flaky(key)

    seen: list[BudgetKey] = []
    clock = ManualClock()
    scheduler = Scheduler(
        reconcile, lambda: [A], retry=timedelta(milliseconds=20), failed=seen.append, clock=clock
    )
    with running(scheduler, clock):
        clock.drive(lambda: len(calls) == 2, step=0.02, within=60)
    assert (calls, seen) == ([A, A], [A])


def test_a_budget_woken_while_not_leading_is_due_when_leading_starts() -> None:
    clock = ManualClock()
    recorder = Recorder(lambda key, call: None, clock)
    scheduler = Scheduler(recorder, lambda: [], workers=2, clock=clock)
    scheduler.wake(B)  # seen by the watch before this replica leads
    with running(scheduler, clock):
        eventually(lambda: recorder.calls[B] == 1)
    with running(scheduler, clock):  # leading again later: nothing left over
        clock.advance(0.1)
        clock.settle((recorder.busy,))
    assert recorder.calls == Counter({B: 1})


def test_wakes_come_no_sooner_than_the_spacing_after_the_last_run() -> None:
    clock = ManualClock()
    recorder = Recorder(lambda key, call: timedelta(hours=1), clock)
    scheduler = Scheduler(recorder, lambda: [A], spacing=timedelta(milliseconds=300), clock=clock)
    with running(scheduler, clock):
        eventually(lambda: len(recorder.spans) == 1)
        for _ in range(50):  # a hot budget: admission charges it again and again
            scheduler.wake(A)
        clock.drive(lambda: len(recorder.spans) == 2, step=0.05, within=60, busy=(recorder.busy,))
        clock.advance(0.1)
        clock.settle((recorder.busy,))
    assert recorder.calls[A] == 2
    (_, first_ended), (second_started, _) = recorder.spans
    assert second_started - first_ended >= 0.3


def test_a_budget_whose_pass_is_long_is_woken_no_more_than_its_share_of_the_time() -> None:
    """A pass over 100,000 accounts takes seconds: woken by every charge after the spacing
    alone, a hot budget would be reconciled most of the time."""
    clock = ManualClock()

    def slow_first(key: BudgetKey, call: int) -> timedelta:
        if call == 1:
            clock.advance(3.0)  # its pass took 3 s
        return timedelta(hours=1)

    recorder = Recorder(slow_first, clock)
    scheduler = Scheduler(recorder, lambda: [A], spacing=timedelta(milliseconds=300), clock=clock)
    with running(scheduler, clock):
        eventually(lambda: len(recorder.spans) == 1)
        clock.settle((recorder.busy,))
        for _ in range(50):
            scheduler.wake(A)
        clock.drive(lambda: len(recorder.spans) == 2, step=0.25, within=60, busy=(recorder.busy,))
    (first_started, _), (second_started, _) = recorder.spans
    took = 3.0
    assert second_started - first_started >= took + took * (1 / PASS_SHARE - 1)


def test_a_budget_that_does_not_read_waits_for_a_change_not_a_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, it was tried again every 2 s, each time with a traceback in the log."""
    calls: list[BudgetKey] = []

    def reconcile(key: BudgetKey) -> timedelta | None:
        calls.append(key)
        raise Unreadable(f"{key} does not read (status.consumed: not an integer)")

    seen: list[BudgetKey] = []
    clock = ManualClock()
    scheduler = Scheduler(
        reconcile, lambda: [A], retry=timedelta(milliseconds=20), failed=seen.append, clock=clock
    )
    with caplog.at_level("ERROR", logger="budgetops.schedule"), running(scheduler, clock):
        eventually(lambda: len(seen) == 1)
        clock.advance(0.2)  # ten retry periods, had it been put back on a timer
        clock.settle()
        assert calls == [A], "not retried on a timer"
        scheduler.wake(A)  # its row changed
        eventually(lambda: len(calls) == 2)
    assert "Traceback" not in caplog.text
    assert f"not reconciling {A} until it is fixed: {A} does not read" in caplog.text
