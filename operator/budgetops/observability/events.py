"""Kubernetes Events about budgets: what an operator sees in `kubectl describe`.

An Event is a notice, not a record: BudgetOps' records are in status. Failing to write one
is logged and never fails the admission that caused it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from budgetops.apis.resources import ObjectMeta, Subject
from budgetops.engine.clock import Clock, system_clock

log = logging.getLogger("budgetops.events")

EventType = Literal["Normal", "Warning"]


class EventRecorder(Protocol):
    def emit(
        self,
        subject: Subject,
        *,
        type: EventType,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Tell people something happened to `subject` (`at`, or now)."""
        ...


class LogEvents:
    """Where there is no API server (the embedded ledger): Events go to the log.
    In a cluster, `adapters.events.KubeEvents` posts them."""

    def emit(
        self,
        subject: Subject,
        *,
        type: EventType,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        log.info("%s %s/%s: %s: %s", type, subject.kind, subject.metadata.name, reason, message)


@dataclass(frozen=True, slots=True)
class _Reference:
    """A queued Event's subject: the budget's kind, name, namespace and uid, without its spec
    and status (a 100-account TrustBudget is about 30 KB of JSON, and a boundary queues
    hundreds)."""

    kind: str
    metadata: ObjectMeta


@dataclass(frozen=True)
class _Queued:
    subject: _Reference
    type: EventType
    reason: str
    message: str
    at: datetime
    """When it happened: the time the Event shows, however long it waited."""
    queued: float
    """Monotonic seconds when queued, for the patience."""


YIELD_SECONDS = 0.05
"""How often a waiting Event looks whether the store has stopped writing."""


class QueuedEvents:
    """Hands Events to one background poster, so that telling never waits on the API server.

    A reconcile that rolls a thousand windows at once would otherwise spend a POST per notice
    on its own thread. The queue is bounded: when the poster falls behind, new Events are
    dropped and counted (`dropped`) rather than held in memory or made to wait.

    Events also yield to status writes: while `busy()` says the store is writing, an Event
    waits, but never longer than `patience` seconds after it was queued. Statuses are the
    record and Events the notice, and at a window boundary both compete for one API server
    (measured in docs/performance.md: the boundary took 10.7 to 13.3 s with Events posted
    during it, 9.3 s without them).
    """

    def __init__(
        self,
        recorder: EventRecorder,
        *,
        capacity: int = 2048,
        busy: Callable[[], bool] = lambda: False,
        patience: float = 10.0,
        clock: Clock = system_clock,
    ) -> None:
        self.recorder = recorder
        self.busy = busy
        self.clock = clock
        self.patience = patience
        self.dropped = 0
        self._queue: queue.Queue[_Queued] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._poster: threading.Thread | None = None

    def emit(
        self,
        subject: Subject,
        *,
        type: EventType,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Queue the Event, stamped now unless `at` says when it happened."""
        meta = subject.metadata  # not annotations or managedFields, which can be large
        named = ObjectMeta.model_construct(name=meta.name, namespace=meta.namespace, uid=meta.uid)
        reference = _Reference(subject.kind, named)
        queued = _Queued(reference, type, reason, message, at or self.clock(), time.monotonic())
        try:
            self._queue.put_nowait(queued)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("dropped Event %s on %s/%s", reason, subject.kind, subject.metadata.name)
            return
        with self._lock:
            if self._poster is None:
                self._poster = threading.Thread(target=self._post, daemon=True, name="events")
                self._poster.start()

    def _post(self) -> None:
        while True:
            event = self._queue.get()
            while self.busy() and time.monotonic() - event.queued < self.patience:
                time.sleep(YIELD_SECONDS)
            try:
                self.recorder.emit(
                    event.subject,
                    type=event.type,
                    reason=event.reason,
                    message=event.message,
                    at=event.at,
                )
            except Exception:
                log.exception(
                    "could not record Event %s on %s", event.reason, event.subject.metadata.name
                )
