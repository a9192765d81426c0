"""The unknowns budget: how much a release may leave unassessed before it warns or blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.common import format_amount, format_time
from budgetops.apis.numbers import PLACES, REASONS_MAX, WHOLE_DIGITS
from budgetops.apis.riskbudget import OTHER_REASONS, UnknownsBudget, UnknownsTally
from budgetops.engine.canonical import config_hash

CheckResult = Literal["pass", "warn", "fail"]

MOST_UNCERTAINTY = Decimal(f"{'9' * WHOLE_DIGITS}.{'9' * PLACES}")
"""Where a window's summed uncertainty stops: the largest amount a status reads back."""


@dataclass(frozen=True)
class UnknownCounts:
    """What a release reports it could not assess: counts by reason and summed uncertainty."""

    by_reason: dict[str, int] = field(default_factory=dict)
    cumulative_uncertainty: Decimal = Decimal(0)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def to_predicate(self) -> dict[str, Any]:
        """The `actualCounts` block of a budget check."""
        return {
            "total": self.total,
            "cumulativeUncertainty": format_amount(self.cumulative_uncertainty),
            "byReason": dict(sorted(self.by_reason.items())),
        }


@dataclass(frozen=True)
class Violation:
    """One exceeded limit: `total`, `uncertainty` or `reason` (with the reason code)."""

    type: Literal["total", "uncertainty", "reason"]
    limit: Decimal
    actual: Decimal
    reason: str | None = None

    def to_predicate(self) -> dict[str, Any]:
        """The violation as a verdict lists it."""
        found: dict[str, Any] = {
            "type": self.type,
            "limit": format_amount(self.limit),
            "actual": format_amount(self.actual),
        }
        if self.reason:
            found["reason"] = self.reason
        return found

    def describe(self) -> str:
        what = {
            "total": "unknowns in total",
            "uncertainty": "cumulative uncertainty",
            "reason": f"unknowns for reason {self.reason}",
        }[self.type]
        return f"{what}: {self.actual} exceeds the limit of {self.limit}"


@dataclass(frozen=True)
class UnknownsCheck:
    """The outcome, the violations behind it and the hash of the limits it applied."""

    result: CheckResult
    violations: tuple[Violation, ...]
    config_hash: str
    evaluated_at: datetime

    def to_predicate(self, config: UnknownsBudget, counts: UnknownCounts) -> dict[str, Any]:
        """The `budgetCheck` block of a verdict: config, counts, result, hash, violations."""
        return {
            "config": unknowns_config(config),
            "actualCounts": counts.to_predicate(),
            "result": self.result,
            "configHash": self.config_hash,
            "evaluatedAt": format_time(self.evaluated_at),
            "violations": [v.to_predicate() for v in self.violations],
        }


def unknowns_config(config: UnknownsBudget) -> dict[str, Any]:
    """The limits exactly as hashed: the same keys whatever the manifest's spelling."""
    return {
        "maxUnknownCount": config.max_unknown_count,
        "maxCumulativeUncertainty": config.max_cumulative_uncertainty,
        "action": config.action,
        "reasonLimits": dict(sorted(config.reason_limits.items())),
    }


def check_unknowns(
    config: UnknownsBudget, counts: UnknownCounts, *, now: datetime
) -> UnknownsCheck:
    """Compare a release's unknowns with the limits; `fail` only when the action is block."""
    violations: list[Violation] = []
    if counts.total > config.max_unknown_count:
        violations.append(
            Violation("total", Decimal(config.max_unknown_count), Decimal(counts.total))
        )
    if counts.cumulative_uncertainty > config.max_cumulative_uncertainty:
        violations.append(
            Violation(
                "uncertainty", config.max_cumulative_uncertainty, counts.cumulative_uncertainty
            )
        )
    for reason, limit in sorted(config.reason_limits.items()):
        actual = counts.by_reason.get(reason, 0)
        if actual > limit:
            violations.append(Violation("reason", Decimal(limit), Decimal(actual), reason))
    if not violations:
        result: CheckResult = "pass"
    else:
        result = "fail" if config.action == "block" else "warn"
    return UnknownsCheck(
        result=result,
        violations=tuple(violations),
        config_hash=config_hash(unknowns_config(config)),
        evaluated_at=now,
    )


def tally(window: UnknownsTally, counts: UnknownCounts | None, check: UnknownsCheck | None) -> None:
    """Count an admitted release in its window's tally: the unknowns it reported (reasons
    past REASONS_MAX under OTHER_REASONS), and whether it was let through past a limit."""
    if check is not None and check.result != "pass":
        window.warned += 1
    if counts is None or not (counts.total or counts.cumulative_uncertainty):
        return
    window.releases += 1
    window.total += counts.total
    window.cumulative_uncertainty = min(
        window.cumulative_uncertainty + counts.cumulative_uncertainty, MOST_UNCERTAINTY
    )
    for reason, count in sorted(counts.by_reason.items()):
        if count:
            known = reason in window.by_reason or len(window.by_reason) < REASONS_MAX
            key = reason if known else OTHER_REASONS
            window.by_reason[key] = window.by_reason.get(key, 0) + count
