"""Admission decisions: decide on a snapshot and, when allowed, charge it, in one pure step.

The store runs `admit_*` inside its transaction (or compare-and-swap attempt) on the freshest
status; a retry after a conflict runs it again on fresh state. Messages are what a person
reads at a denial or in kubectl's warnings: calm, exact, and saying what happens next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from budgetops.apis.common import Unit, format_time
from budgetops.apis.riskbudget import ChangeClass, RiskBudgetSpec, RiskBudgetStatus
from budgetops.apis.trustbudget import TrustBudgetSpec, TrustBudgetStatus
from budgetops.engine import ledger
from budgetops.engine.rollover import (
    roll_risk_window,
    summarize_risk,
    trust_account,
)
from budgetops.engine.unknowns import UnknownCounts, check_unknowns

Reason = Literal[
    "Charged",
    "AlreadyCharged",
    "DryRun",
    "Exhausted",
    "BandFrozen",
    "UnknownsExceeded",
    "Uncovered",
]


@dataclass(frozen=True)
class Decision:
    """Allowed or not, what was charged, the denial message and the lines kubectl shows."""

    allowed: bool
    reason: Reason
    cost: Decimal
    message: str = ""
    warnings: tuple[str, ...] = ()


ZERO = Decimal(0)
CENT = Decimal("0.01")


def show(amount: Decimal, unit: Unit) -> str:
    """An amount as people read it: `1` point, `0.50` USD."""
    return f"{amount.quantize(CENT)}" if unit == "USD" else f"{amount:f}"


def _resets(at: datetime | None) -> str:
    return format_time(at) if at else "never (it has no reset interval)"


def admit_trust(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    account: str,
    cost: Decimal,
    key: str,
    ref: str,
    now: datetime,
    ttl: timedelta,
    dry_run: bool = False,
) -> Decision:
    """Decide one issuance against `account` and reserve `cost` under `key` if allowed."""
    trust_account(status, spec, key=account, now=now)
    target = status.accounts[account]
    unit = spec.unit
    charge = ledger.reserve(
        status,
        account=account,
        key=key,
        amount=cost,
        now=now,
        ttl=ttl,
        ref=ref,
        dry_run=dry_run,
    )
    if charge.status == "duplicate":
        return Decision(
            True,
            "AlreadyCharged",
            ZERO,
            warnings=(f"Trust budget {account}: {ref or key} was already charged",),
        )
    if charge.status == "insufficient":
        message = (
            f"Trust budget exhausted. This request requires {show(cost, unit)} {unit}; "
            f"{show(target.balance, unit)} remain. Budget resets at {_resets(target.resets_at)}."
        )
        if spec.enforcement == "warn":
            return Decision(True, "Exhausted", ZERO, warnings=(f"{message} (warn only)",))
        return Decision(False, "Exhausted", ZERO, message=message)
    receipt = (
        f"Trust budget {account}: cost {show(cost, unit)}, remaining {show(charge.balance, unit)} "
        f"of {show(target.allocation, unit)}, resets {_resets(target.resets_at)}"
    )
    if dry_run:
        return Decision(True, "DryRun", ZERO, warnings=(f"{receipt} (dry run, not charged)",))
    return Decision(True, "Charged", cost, warnings=(receipt,))


@dataclass(frozen=True)
class Release:
    """What a workload declares about the release it ships."""

    key: str
    points: int
    change_class: ChangeClass
    ref: str = ""
    unknowns: UnknownCounts | None = None


def _risk_state(status: RiskBudgetStatus) -> str:
    window = status.window
    assert window is not None
    return (
        f"{status.consumed} / {status.allocation} RP ({status.percent_used}%) in window "
        f"{window.key}, which resets at {format_time(window.end)}"
    )


def _deny_or_warn(spec: RiskBudgetSpec, reason: Reason, message: str) -> Decision:
    if spec.enforcement == "warn":
        return Decision(True, reason, Decimal(0), warnings=(f"{message} (warn only)",))
    return Decision(False, reason, Decimal(0), message=message)


def admit_risk(
    status: RiskBudgetStatus,
    spec: RiskBudgetSpec,
    *,
    release: Release,
    now: datetime,
    ttl: timedelta,
    dry_run: bool = False,
) -> Decision:
    """Decide one release against the service's current window and reserve its points."""
    roll_risk_window(status, spec, now=now)
    service = spec.service_id
    account = status.accounts[service]
    if ledger.is_known(status, release.key):
        return Decision(
            True,
            "AlreadyCharged",
            Decimal(0),
            warnings=(f"Risk budget {service}: release {release.key} was already charged",),
        )
    warnings: list[str] = []
    allowed_classes = spec.bands.allows(status.band)
    if release.change_class not in allowed_classes:
        return _deny_or_warn(
            spec,
            "BandFrozen",
            f"Risk budget {service} is {status.band}: {_risk_state(status)}. "
            f"In {status.band} only {', '.join(allowed_classes) or 'no'} changes may ship; "
            f"this release is {release.change_class}.",
        )
    if spec.unknowns is not None and release.unknowns is not None:
        check = check_unknowns(spec.unknowns, release.unknowns, now=now)
        details = "; ".join(v.describe() for v in check.violations)
        if check.result == "fail":
            return _deny_or_warn(
                spec,
                "UnknownsExceeded",
                f"Release {release.key} has too many unknowns for {service}: {details}.",
            )
        if check.result == "warn":
            warnings.append(f"Release {release.key} exceeds the unknowns budget: {details}")
    points = Decimal(release.points)
    reason: Reason = "Charged"
    if points > account.balance:
        if release.change_class not in spec.bands.exhausted:
            return _deny_or_warn(
                spec,
                "Exhausted",
                f"Risk budget {service} cannot cover this release: it needs {release.points} RP"
                f" and {show(account.balance, 'points')} remain; {_risk_state(status)}.",
            )
        uncovered = points - account.balance
        points = account.balance
        reason = "Uncovered"
        warnings.append(
            f"Risk budget {service}: {release.change_class} admitted past the budget; "
            f"{show(uncovered, 'points')} RP uncovered"
        )
    if dry_run:
        return Decision(True, "DryRun", Decimal(0), warnings=(*warnings, "dry run, not charged"))
    ledger.reserve(
        status,
        account=service,
        key=release.key,
        amount=points,
        now=now,
        ttl=ttl,
        ref=release.ref,
    )
    summarize_risk(status, spec)
    warnings.insert(
        0,
        f"Risk budget {service}: {release.points} RP ({release.change_class}), "
        f"now {_risk_state(status)}; band {status.band}",
    )
    return Decision(True, reason, points, warnings=tuple(warnings))
