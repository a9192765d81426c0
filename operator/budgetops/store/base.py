"""The store interface: the only door through which budgets are read and charged.

Two implementations keep it honest: SQLite for the embedded default (here) and the API
server for the cluster (the admission issue). Both promise the same thing for
`update_status`: the change runs on the freshest status and is persisted atomically, or
not at all; run again from scratch if another writer got there first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from budgetops.apis.ledger import Ledger
from budgetops.apis.resources import Budget, BudgetKey, Kind

T = TypeVar("T")


class NotFound(LookupError):
    """No budget under that key."""


class Unreadable(Exception):
    """A stored budget that does not read back: charges to it are refused, calmly, until it
    is fixed; no other budget stops for it. The message names it and says why."""


class ChargeTimeout(TimeoutError):
    """The charge could not be decided and written before the caller's deadline."""


def one_account(budget: Budget, account: str | None) -> Budget:
    """`budget` as `get(key, account=...)` answers: a copy whose status holds `account` alone
    (`budget` itself when no account is asked for, or it keeps no ledger)."""
    status = getattr(budget, "status", None)
    if account is None or not isinstance(status, Ledger):
        return budget
    found = status.accounts.get(account)
    only = status.model_copy(update={"accounts": {} if found is None else {account: found}})
    return budget.model_copy(update={"status": only})


class BudgetStore(Protocol):
    """Where budgets live and how their status is changed."""

    def apply(self, budget: Budget) -> Budget:
        """Create the budget or update its spec, keeping its status; returns what is stored."""
        ...

    def get(self, key: BudgetKey, *, account: str | None = None) -> Budget:
        """The stored budget; raises NotFound. With `account`, its status holds that account
        alone (none if it was never charged): a store that keeps accounts apart reads only
        that one, so the answer takes the same time in a budget of any size."""
        ...

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        """Every stored budget, of one kind if given, sorted by key.

        Admission needs only specs to classify a request: `with_status=False` may return
        budgets with an empty status, which is far cheaper. Treat what is returned as
        read-only: a store may share it with its cache.
        """
        ...

    def unreadable(self) -> dict[BudgetKey, str]:
        """The budgets `list` leaves out because they do not read, each with why, sorted.

        No other budget stops for one (`ready` stays true); its own charges fail until it is
        fixed. `budgetops status` shows them, so that they are not silently missing.
        """
        ...

    def delete(self, key: BudgetKey) -> bool:
        """Forget a budget; False if there was none."""
        ...

    def ready(self) -> bool:
        """Whether reads answer from current state now (what `/readyz` reports)."""
        ...

    def update_status(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float = 10.0,
        needs_write: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """Run `change` on the current budget and persist its status atomically.

        `change` mutates `budget.status` only and must depend on nothing but its argument:
        it may run more than once when writers race, and only its last run counts. When
        `needs_write(result)` is False nothing is persisted and the result stands as it is.
        Raises ChargeTimeout when it cannot finish within `timeout` seconds.
        """
        ...

    async def update_status_async(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float = 10.0,
        needs_write: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """`update_status` for a coroutine: the caller's event loop is never blocked."""
        ...
