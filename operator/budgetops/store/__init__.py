"""Adapters that persist budgets: the embedded SQLite ledger (and, later, the API server)."""

from budgetops.apis.resources import BudgetKey
from budgetops.store.base import BudgetStore, ChargeTimeout, NotFound, Unreadable
from budgetops.store.sqlite import SQLiteStore

__all__ = ["BudgetKey", "BudgetStore", "ChargeTimeout", "NotFound", "SQLiteStore", "Unreadable"]
