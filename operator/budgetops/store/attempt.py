"""The one attempt of a status change that every store makes, and its readiness.

snapshot → apply → seal audit → write → publish: the store reads the budget (`_snapshot`),
group commit applies its batch to it (`apply`), the trail seals the batch's audit records
into the budget's chain, the store writes status and records at once (`_persist`), and
only once that write stands are the records published. What a store supplies is the read,
the write and what one attempt runs inside (`_attempting`: a transaction, or the errors
it turns into a ChargeTimeout); the order is kept here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from budgetops.apis.resources import Budget, BudgetKey, Kind
from budgetops.engine.audit import Sealed
from budgetops.store.audit import AuditTrail
from budgetops.store.commit import Apply, Committed


class Attempted(Committed):
    """`update_status` over `_attempt`, and `ready`, for a store that supplies the rest."""

    trail: AuditTrail

    def _attempt(self, key: BudgetKey, fresh: bool, apply: Apply) -> bool:
        """One attempt, as GroupCommit calls it: True when done (written, or nothing to
        write), False when the write lost to another writer's."""
        with self._attempting(key):
            budget = self._snapshot(key, fresh=fresh)
            if not apply(budget):
                self._unwritten(key, budget)
                return True
            sealed = self.trail.seal(key, budget)
            if not self._persist(key, budget, sealed):
                return False
        self.trail.publish(sealed)
        return True

    @contextlib.contextmanager
    def _attempting(self, key: BudgetKey) -> Iterator[None]:
        """What an attempt's read and write run inside; nothing by default."""
        yield

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        """The budget to apply changes to, the store's own copy (afresh if `fresh`);
        raises NotFound, or Unreadable for a budget that does not read."""
        raise NotImplementedError

    def _unwritten(self, key: BudgetKey, budget: Budget) -> None:
        """The attempt's changes needed no write; by default the snapshot is dropped (it
        may hold changes that were not persisted)."""

    def _persist(self, key: BudgetKey, budget: Budget, sealed: Sequence[Sealed]) -> bool:
        """Write `budget.status` (and, where the store keeps them, the `sealed` records)
        if nobody else wrote it since its snapshot: False if somebody did."""
        raise NotImplementedError

    # Readiness.

    log = logging.getLogger("budgetops.store")

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        raise NotImplementedError

    def _unread(self) -> str:
        """What `ready` logs when the budgets cannot be listed."""
        return "budgets cannot be read"

    def _current(self) -> bool:
        """Whether what reads answer from is current (logging why not); True by default."""
        return True

    def ready(self) -> bool:
        """Reads answer from current state and the budgets list as admission reads it (specs,
        cached; a budget that does not read is left out, not a reason to stop admitting for
        every other). A probe decodes no status: that grew with every account."""
        if not self._current():
            return False
        try:
            self.list(with_status=False)
        except Exception:
            self.log.exception(self._unread())
            return False
        return True
