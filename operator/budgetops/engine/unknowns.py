"""The unknowns budget: how much a release may leave unassessed before it warns or blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.common import format_amount, format_time
from budgetops.apis.riskbudget import UnknownsBudget
from budgetops.engine.canonical import config_hash

CheckResult = Literal["pass", "warn", "fail"]


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
