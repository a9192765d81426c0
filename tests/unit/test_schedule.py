"""The due queue and the scheduler that drains it (threads, but no API server)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from budgetops.apis.resources import BudgetKey
from budgetops.handlers.schedule import DueQueue, Scheduler
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


class Recorder:
    """A reconcile that counts calls per key and checks no key runs twice at once."""

    def __init__(self, answer: Callable[[BudgetKey, int], timedelta | None]) -> None:
        self.answer = answer
        self.calls: Counter[BudgetKey] = Counter()
        self.spans: list[tuple[float, float]] = []  # (start, end) of every call
        self.running: set[BudgetKey] = set()
        self.overlaps = 0
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()

    def __call__(self, key: BudgetKey) -> timedelta | None:
        started = time.monotonic()
        with self.lock:
            self.overlaps += key in self.running
            self.running.add(key)
            self.calls[key] += 1
            call = self.calls[key]
        self.hold.wait(5)
        with self.lock:
            self.running.discard(key)
            self.spans.append((started, time.monotonic()))
        return self.answer(key, call)


@contextmanager
def running(scheduler: Scheduler) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "the scheduler did not stop within 5 s"


def test_every_budget_is_reconciled_at_start_then_when_it_asks() -> None:
    # A asks again in 50 ms twice, then is gone; B waits an hour; C is gone at once.
    def answer(key: BudgetKey, call: int) -> timedelta | None:
        if key == A and call < 3:
            return timedelta(milliseconds=50)
        return timedelta(hours=1) if key == B else None

    recorder = Recorder(answer)
    with running(Scheduler(recorder, lambda: [A, B, C], workers=4)):
        eventually(lambda: recorder.calls[A] == 3)
        time.sleep(0.2)
    assert recorder.calls == Counter({A: 3, B: 1, C: 1})
    assert recorder.overlaps == 0


def test_a_wake_during_a_reconcile_runs_it_once_more_after() -> None:
    recorder = Recorder(lambda key, call: timedelta(hours=1))
    scheduler = Scheduler(recorder, lambda: [A], workers=4, spacing=timedelta(0))
    recorder.hold.clear()
    with running(scheduler):
        eventually(lambda: A in recorder.running)
        for _ in range(5):  # the watch reports several changes meanwhile
            scheduler.wake(A)
        recorder.hold.set()
        eventually(lambda: recorder.calls[A] == 2)
        time.sleep(0.2)
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
    scheduler = Scheduler(
        reconcile, lambda: [A], retry=timedelta(milliseconds=20), failed=seen.append
    )
    with running(scheduler):
        eventually(lambda: len(calls) == 2)
    assert (calls, seen) == ([A, A], [A])


def test_a_budget_woken_while_not_leading_is_due_when_leading_starts() -> None:
    recorder = Recorder(lambda key, call: None)
    scheduler = Scheduler(recorder, lambda: [], workers=2)
    scheduler.wake(B)  # seen by the watch before this replica leads
    with running(scheduler):
        eventually(lambda: recorder.calls[B] == 1)
    with running(scheduler):  # leading again later: nothing left over
        time.sleep(0.1)
    assert recorder.calls == Counter({B: 1})


def test_wakes_come_no_sooner_than_the_spacing_after_the_last_run() -> None:
    recorder = Recorder(lambda key, call: timedelta(hours=1))
    scheduler = Scheduler(recorder, lambda: [A], spacing=timedelta(milliseconds=300))
    with running(scheduler):
        eventually(lambda: len(recorder.spans) == 1)
        for _ in range(50):  # a hot budget: admission charges it again and again
            scheduler.wake(A)
        eventually(lambda: len(recorder.spans) == 2)
        time.sleep(0.1)
    assert recorder.calls[A] == 2
    (_, first_ended), (second_started, _) = recorder.spans
    assert second_started - first_ended >= 0.3


def test_a_budget_that_does_not_read_waits_for_a_change_not_a_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, it was tried again every 2 s, each time with a traceback in the log."""
    calls: list[BudgetKey] = []

    def reconcile(key: BudgetKey) -> timedelta | None:
        calls.append(key)
        raise Unreadable(f"{key} does not read (status.consumed: not an integer)")

    seen: list[BudgetKey] = []
    scheduler = Scheduler(
        reconcile, lambda: [A], retry=timedelta(milliseconds=20), failed=seen.append
    )
    with caplog.at_level("ERROR", logger="budgetops.schedule"), running(scheduler):
        eventually(lambda: len(seen) == 1)
        time.sleep(0.2)
        assert calls == [A], "not retried on a timer"
        scheduler.wake(A)  # its row changed
        eventually(lambda: len(calls) == 2)
    assert "Traceback" not in caplog.text
    assert f"not reconciling {A} until it is fixed: {A} does not read" in caplog.text
