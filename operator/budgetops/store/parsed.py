"""Budgets kept parsed, per key, with the stamp of what each was parsed from.

Parsing a large status takes milliseconds, so both stores keep what they parsed and use it
again while what it came from has not moved: a SQLite row's version or object, a custom
object's resourceVersion or spec (uid and generation). The stamp is compared on every use:
a kept budget whose source moved on is never handed out, only replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

from budgetops.apis.resources import Budget, BudgetKey

S = TypeVar("S", bound=Hashable)


class Parsed(Generic[S]):
    """One parsed budget per key and the stamp it was parsed at; safe from many threads.
    `most`: keys kept at the most, all dropped once one more comes (budgets since deleted
    by another process are never forgotten one by one)."""

    def __init__(self, *, most: int | None = None) -> None:
        self.most = most
        self._kept: dict[BudgetKey, tuple[S, Budget]] = {}
        self._lock = threading.Lock()

    def get(self, key: BudgetKey, stamp: S) -> Budget | None:
        """The budget kept for `key` if it was parsed at `stamp` (shared: do not mutate)."""
        with self._lock:
            kept = self._kept.get(key)
        return kept[1] if kept is not None and kept[0] == stamp else None

    def take(self, key: BudgetKey, stamp: S) -> Budget | None:
        """`get`, but the budget is the caller's to change: it is kept no longer."""
        with self._lock:
            kept = self._kept.pop(key, None)
        return kept[1] if kept is not None and kept[0] == stamp else None

    def keep(self, key: BudgetKey, stamp: S, budget: Budget) -> None:
        with self._lock:
            if self.most is not None and key not in self._kept and len(self._kept) >= self.most:
                self._kept.clear()
            self._kept[key] = (stamp, budget)

    def forget(self, key: BudgetKey) -> None:
        with self._lock:
            self._kept.pop(key, None)
