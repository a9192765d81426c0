"""Service tiers: what a RiskBudget's `spec.tier` is worth, and the tier of one that names none.

The table is deployment configuration, one per cluster or embedded ledger: the chart renders
it into a ConfigMap the operator reads from a file (`--tiers`, `$BUDGETOPS_TIERS`), and so does
the command line. The composition root that reads it hands it to `use`, at start and whenever
the file changes; everything that sizes a window asks `active()`. Nothing here reads a file.

The built-in table is the seed's, so a deployment that configures nothing gets it.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from budgetops.apis.common import Model

TIER_MAX = 99
"""The highest tier number: tiers are a short ordered list, not identifiers."""

TierNumber = Annotated[int, Field(ge=0, le=TIER_MAX)]


class Tier(Model):
    """One row: how people call the tier and its risk points per window."""

    name: str = Field(min_length=1, max_length=63)
    allocation: int = Field(ge=1, le=1_000_000)


class TierTable(Model):
    """`defaultTier` and the tiers by number, as the seed's `policy.riskBudget` has them."""

    default_tier: TierNumber | None = Field(
        default=None,
        description="The tier of a RiskBudget that sets neither tier nor allocation; none: "
        "such a budget is refused",
    )
    tiers: dict[TierNumber, Tier] = Field(min_length=1, max_length=TIER_MAX + 1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.default_tier is not None and self.default_tier not in self.tiers:
            raise ValueError(f"defaultTier {self.default_tier} is not in tiers ({self.numbers()})")
        names = [tier.name for tier in self.tiers.values()]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"tier names must differ: {', '.join(doubled)}")
        return self

    def numbers(self) -> str:
        """`0, 1, 2, 3`: the tiers there are, for messages."""
        return ", ".join(str(number) for number in sorted(self.tiers))

    def refusal(self, tier: int | None, allocation: int | None) -> str | None:
        """Why a RiskBudget with this `tier` and `allocation` cannot be sized, or None."""
        if allocation is not None:
            return None
        if tier is None:
            if self.default_tier is None:
                return "set a tier or an explicit allocation: this table has no defaultTier"
            return None
        if tier not in self.tiers:
            return f"tier {tier} is not in the tier table (tiers {self.numbers()})"
        return None

    def row(self, tier: int | None) -> tuple[int, Tier]:
        """The tier a budget is sized by (its own, else `defaultTier`); ValueError when the
        table lacks it (see `refusal`)."""
        number = self.default_tier if tier is None else tier
        if number is None or number not in self.tiers:
            raise ValueError(self.refusal(tier, None))
        return number, self.tiers[number]


BUILT_IN = TierTable(
    default_tier=1,
    tiers={
        0: Tier(name="Internal", allocation=300),
        1: Tier(name="Customer-Facing Non-Critical", allocation=200),
        2: Tier(name="Customer-Facing Critical", allocation=120),
        3: Tier(name="Safety-Critical", allocation=80),
    },
)
"""The seed's four tiers, 300, 200, 120 and 80 risk points a window; tier 1 by default."""

_active: TierTable = BUILT_IN


def active() -> TierTable:
    """The table this process sizes windows by."""
    return _active


def use(table: TierTable) -> TierTable:
    """Make `table` the one this process sizes windows by; returns the one it replaces. A
    reference swap: a reader sees the old table or the new one, never a mix."""
    global _active
    previous, _active = _active, table
    return previous
