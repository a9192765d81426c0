"""Queued Events: telling never waits, and what a full queue drops is counted and scraped."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from budgetops.apis.resources import Subject, TrustBudget
from budgetops.observability.events import QueuedEvents
from budgetops.observability.metrics import EventsCollector
from tests.waiting import eventually


class Stuck:
    """An API server that takes each Event only when the test lets it."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.posted: list[str] = []
        self.stamped: list[datetime | None] = []

    def emit(
        self, subject: Subject, *, type: str, reason: str, message: str, at: datetime | None = None
    ) -> None:
        self.go.wait(5)
        self.posted.append(reason)
        self.stamped.append(at)


def test_a_full_queue_drops_new_events_and_the_metric_counts_them() -> None:
    budget = _budget()
    stuck = Stuck()
    events = QueuedEvents(stuck, capacity=2)
    registry = CollectorRegistry()
    registry.register(EventsCollector(events))
    for n in range(6):  # one is being posted, two wait, the rest do not fit
        events.emit(budget, type="Normal", reason=f"R{n}", message="m")
    stuck.go.set()
    eventually(lambda: len(stuck.posted) + events.dropped == 6)
    assert events.dropped >= 3
    assert (
        f"budgetops_events_dropped_total {events.dropped:.1f}" in generate_latest(registry).decode()
    )


def _budget() -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": "certs"},
            "spec": {
                "subjects": {"users": ["alice"]},
                "match": [{"group": "", "resource": "configmaps"}],
                "initialBalance": 1,
                "resetInterval": "1h",
            },
        }
    )


def test_events_wait_while_the_store_writes_statuses() -> None:
    stuck = Stuck()
    stuck.go.set()
    writing = threading.Event()
    writing.set()
    asked: list[bool] = []

    def busy() -> bool:
        asked.append(writing.is_set())
        return asked[-1]

    events = QueuedEvents(stuck, busy=busy, patience=60)
    events.emit(_budget(), type="Normal", reason="WindowClosed", message="m")
    eventually(lambda: len(asked) >= 3)  # the poster has the Event and keeps asking
    assert stuck.posted == [], "posted while statuses were being written"
    writing.clear()
    eventually(lambda: stuck.posted == ["WindowClosed"])


def test_an_event_waits_no_longer_than_its_patience() -> None:
    stuck = Stuck()
    stuck.go.set()
    events = QueuedEvents(stuck, busy=lambda: True, patience=0.2)  # the store never rests
    queued, happened = time.monotonic(), datetime.now(UTC)
    events.emit(_budget(), type="Warning", reason="BreakGlass", message="m")
    eventually(lambda: stuck.posted == ["BreakGlass"])
    assert time.monotonic() - queued >= 0.2
    [stamp] = stuck.stamped
    assert stamp is not None
    assert stamp - happened < timedelta(seconds=0.1), "stamped when queued, not when posted"


def test_a_queued_event_holds_the_budgets_name_not_the_budget() -> None:
    """A boundary queues hundreds of Events; each must not keep a whole status alive."""
    stuck = Stuck()
    names: list[str] = []
    annotations: list[dict[str, str]] = []
    stuck_emit = stuck.emit

    def recorded(subject: Subject, **fields: Any) -> None:
        names.append(f"{subject.kind}/{subject.metadata.name}")
        annotations.append(subject.metadata.annotations)
        stuck_emit(subject, **fields)

    stuck.emit = recorded  # type: ignore[method-assign]
    events = QueuedEvents(stuck)
    budget = _budget()
    budget.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"] = "x" * 4096
    alive = weakref.ref(budget)
    events.emit(budget, type="Normal", reason="First", message="m")  # taken by the poster
    events.emit(budget, type="Normal", reason="Queued", message="m")
    del budget
    gc.collect()
    assert alive() is None, "the queue let the budget go"
    stuck.go.set()
    eventually(lambda: stuck.posted == ["First", "Queued"])
    assert names == ["TrustBudget/certs"] * 2
    assert annotations == [{}, {}], "nor its annotations (or managedFields)"
