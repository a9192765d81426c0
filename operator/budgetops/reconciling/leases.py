"""Keeping BudgetLease objects in step with the leases in each TrustBudget's ledger.

Runs after each reconcile of a TrustBudget (the reconciler sees every change through the
watch). A new or closed lease is written at once; a lease whose spending moved is written
at most every `every`, so a runtime reporting many times a second does not double the
API server's writes. A lease the ledger forgot loses its object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from budgetops.apis.resources import TrustBudget
from budgetops.engine.clock import Clock
from budgetops.engine.leaserecords import manifest, object_name, status_of

log = logging.getLogger("budgetops.leases")


class LeaseObjects(Protocol):
    def create(self, body: dict[str, Any]) -> bool: ...

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    def delete(self, namespace: str, name: str) -> None: ...


@dataclass
class LeaseMirror:
    objects: LeaseObjects
    namespace: str
    clock: Clock
    every: timedelta = timedelta(seconds=5)
    written: dict[str, tuple[dict[str, Any], datetime]] = field(default_factory=dict)
    """Per lease id: the status last written, and when."""
    budgets: dict[str, set[str]] = field(default_factory=dict)
    """Per budget: the lease ids it had at the last sync."""
    held_back: set[str] = field(default_factory=set)
    """Budgets with a spending change not written yet (throttled, or failed)."""

    def sync(self, budget: TrustBudget) -> None:
        """Write what changed; failures are logged and tried again at the next sync."""
        name, now = budget.metadata.name, self.clock()
        current: set[str] = set()
        self.held_back.discard(name)
        for account, target in budget.status.accounts.items():
            for lease_id, hold in target.leases.items():
                current.add(lease_id)
                status = status_of(hold)
                last = self.written.get(lease_id)
                if last is not None and last[0] == status:
                    continue
                throttled = last is not None and last[0]["phase"] == status["phase"]
                if throttled and last is not None and now - last[1] < self.every:
                    self.held_back.add(name)
                    continue
                try:
                    if last is None:
                        self.objects.create(
                            manifest(
                                budget=name,
                                account=account,
                                lease_id=lease_id,
                                hold=hold,
                                namespace=self.namespace,
                            )
                        )
                    self.objects.write_status(self.namespace, object_name(lease_id), status)
                except Exception as error:
                    log.warning("could not record lease %s as a BudgetLease: %s", lease_id, error)
                    self.held_back.add(name)
                    continue
                self.written[lease_id] = (status, now)
        for gone in self.budgets.get(name, set()) - current:
            try:
                self.objects.delete(self.namespace, object_name(gone))
            except Exception as error:
                log.warning("could not delete the BudgetLease of lease %s: %s", gone, error)
                current.add(gone)  # tried again at the next sync
                continue
            self.written.pop(gone, None)
        self.budgets[name] = current

    def due(self, budget: TrustBudget) -> timedelta | None:
        """How soon `budget` must be synced again for what was held back, if anything was."""
        return self.every if budget.metadata.name in self.held_back else None
