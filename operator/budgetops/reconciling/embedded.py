"""The embedded ledger's reconciler: `budgetops serve` settles, resets and rolls windows too.

Without it, a reservation made through the embedded webhook stayed reserved forever and a
reset carried it into every new window. The same Reconciler and Scheduler as in a cluster
run here, with three differences: nobody can look for witnesses (a reservation is
confirmed when it expires), Events go to the log, and changes are noticed by polling the
ledger's row versions, which sees what other processes (`budgetops apply`, `charge`) wrote.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry

from budgetops.apis.resources import BudgetKey
from budgetops.engine.clock import Clock
from budgetops.observability.events import EventRecorder
from budgetops.observability.metrics import ReconcileMetrics
from budgetops.reconciling.operator import keep_budgets
from budgetops.reconciling.schedule import Scheduler, StopFlag
from budgetops.store import BudgetStore
from budgetops.usecases.reconciling import Reconciler, Timing

log = logging.getLogger("budgetops.embedded")

POLL_SECONDS = 1.0
"""How often the ledger's row versions are read to notice changes."""


class VersionedStore(BudgetStore, Protocol):
    """A store that tells every budget's row version cheaply (the embedded ledger does)."""

    def versions(self) -> dict[BudgetKey, int]: ...


class LedgerWatch:
    """Tells listeners of every budget added, changed or removed in the ledger file, by
    whichever process, within `every` seconds."""

    def __init__(self, store: VersionedStore, *, every: float = POLL_SECONDS) -> None:
        self.store = store
        self.every = every
        self.listeners: list[Callable[[BudgetKey], None]] = []
        self._versions = store.versions()

    def budget_keys(self) -> list[BudgetKey]:
        return sorted(self._versions)

    def poll(self) -> None:
        """Read the versions once and tell listeners what moved since the last read."""
        now = self.store.versions()
        moved = [
            k for k in now.keys() | self._versions.keys() if now.get(k) != self._versions.get(k)
        ]
        self._versions = now
        for key in sorted(moved):
            for listener in self.listeners:
                listener(key)

    def run(self, stop: StopFlag, wait: Callable[[float], object]) -> None:
        """Poll until `stop` is set; `wait(seconds)` sleeps (and returns early on stop)."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # a locked or briefly unreadable ledger: try again next time
                log.exception("could not read the ledger's versions")
            wait(self.every)


def embedded_reconciler(
    store: BudgetStore,
    events: EventRecorder,
    registry: CollectorRegistry,
    *,
    clock: Clock,
    timing: Timing | None = None,
) -> Reconciler:
    """The reconciler `serve` keeps the embedded ledger with: no witness lookups."""
    return Reconciler(
        store=store,
        objects=None,
        clock=clock,
        events=events,
        metrics=ReconcileMetrics(registry),
        timing=timing or Timing(),
    )


def keep_ledger(reconciler: Reconciler, watch: LedgerWatch) -> Callable[[threading.Event], None]:
    """What `serve` runs beside the webhook until stopped: the watch and the scheduler."""
    scheduler: Scheduler = keep_budgets(reconciler, watch)

    def run(stop: threading.Event) -> None:
        polling = threading.Thread(
            target=watch.run, args=(stop, stop.wait), name="ledger-watch", daemon=True
        )
        polling.start()
        try:
            scheduler.run(stop)
        finally:
            stop.set()
            polling.join(timeout=watch.every + 5)

    return run
