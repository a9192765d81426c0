"""Informative budgets: a USD TrustBudget's reported spending measured against allocations
by provider, by project and in all. Pure; it only ever measures, never refuses."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from budgetops.apis.agents import InformativeAllocations, PercentUsed, SpentBy
from budgetops.engine.bands import percent_used
from budgetops.engine.ledger import ZERO

Scope = Literal["total", "provider", "project"]


@dataclass(frozen=True)
class Progress:
    """Spending against one informative allocation."""

    scope: Scope
    name: str
    """The provider or project; "" for the total."""
    allocation: Decimal
    spent: Decimal

    @property
    def percent(self) -> Decimal:
        return percent_used(self.spent, self.allocation)


def progress(spent_by: SpentBy, allocations: InformativeAllocations | None) -> list[Progress]:
    """Each allocation the spec sets, with what was spent against it (0 before any report):
    the total first, then providers and projects by name."""
    if allocations is None:
        return []
    found = []
    if allocations.total is not None:
        found.append(Progress("total", "", allocations.total, spent_by.total))
    for name, allocation in sorted(allocations.providers.items()):
        found.append(Progress("provider", name, allocation, spent_by.providers.get(name, ZERO)))
    for name, allocation in sorted(allocations.projects.items()):
        found.append(Progress("project", name, allocation, spent_by.projects.get(name, ZERO)))
    return found


def measure(spent_by: SpentBy, allocations: InformativeAllocations | None) -> None:
    """Refresh `spent_by.percent_used` from the allocations the spec sets (none: cleared)."""
    if allocations is None:
        spent_by.percent_used = None
        return
    shares = PercentUsed()
    for item in progress(spent_by, allocations):
        percent = str(item.percent)
        if item.scope == "total":
            shares.total = percent
        elif item.scope == "provider":
            shares.providers[item.name] = percent
        else:
            shares.projects[item.name] = percent
    spent_by.percent_used = shares
