"""Admission decisions: decide on a snapshot and, when allowed, charge it, in one pure step.

The store runs `admit_*` inside its transaction (or compare-and-swap attempt) on the freshest
status; a retry after a conflict runs it again on fresh state. Messages are what a person
reads at a denial or in kubectl's warnings: calm, exact, and saying what happens next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from budgetops.apis.common import Unit, format_duration, format_time
from budgetops.apis.ledger import Witness
from budgetops.apis.names import shown
from budgetops.apis.numbers import show
from budgetops.apis.riskbudget import (
    MAX_RISK_POINTS,
    Band,
    ChangeClass,
    RiskBudgetSpec,
    RiskBudgetStatus,
)
from budgetops.apis.trustbudget import (
    BREAK_GLASS_USES_KEPT,
    BreakGlassUse,
    TrustBudgetSpec,
    TrustBudgetStatus,
)
from budgetops.engine import audit, breakglass, grants, ledger
from budgetops.engine.rollover import (
    roll_risk_window,
    summarize_risk,
    trust_account,
)
from budgetops.engine.unknowns import UnknownCounts, UnknownsCheck, check_unknowns, tally
from budgetops.engine.vulnerabilities import Evidence

Reason = Literal[
    "Charged",
    "AlreadyCharged",
    "DryRun",
    "Exhausted",
    "BandFrozen",
    "UnknownsExceeded",
    "Uncovered",
    "Warned",
    "BreakGlass",
    "Gone",
    "ReleaseReused",
    "FailedOpen",
]

RESERVING_REASONS: frozenset[Reason] = frozenset({"Charged", "Uncovered", "Warned"})
"""Decisions that left a reservation under the request's key. `Warned`: a warn-mode budget
admitted what enforcing it would refuse, and charged it as if it had been let through
(what is left of the balance at most): shadow mode counts. `Gone`: the budget was deleted
before it could be charged."""

WRITING_REASONS: frozenset[Reason] = RESERVING_REASONS | {"BreakGlass"}


@dataclass(frozen=True)
class Seen:
    """The account as a decision found it: its balance, the band, the unknowns check."""

    balance: Decimal
    band: Band | None = None
    check: UnknownsCheck | None = None


@dataclass(frozen=True)
class Receipt:
    """What an issuance cost an account and what it left: one line in kubectl's warnings,
    a block in the CLI's answer (`cli/writes.py`)."""

    account: str
    cost: Decimal
    remaining: Decimal
    allocation: Decimal
    unit: Unit
    resets_at: datetime | None

    @property
    def line(self) -> str:
        unit = self.unit
        return (
            f"Trust budget {self.account}: cost {show(self.cost, unit)}, remaining "
            f"{show(self.remaining, unit)} of {show(self.allocation, unit)}, resets "
            f"{_resets(self.resets_at)}"
        )


@dataclass(frozen=True)
class Decision:
    """Allowed or not, what was charged, the denial message and the lines kubectl shows."""

    allowed: bool
    reason: Reason
    cost: Decimal
    message: str = ""
    warnings: tuple[str, ...] = ()
    seen: Seen | None = None
    """What the decision saw before it charged (what a verdict attests)."""
    receipt: Receipt | None = None
    """An issuance charged (or, in a dry run, that would be) in full."""

    @property
    def changes_ledger(self) -> bool:
        """Whether the status must be written: a charge or a break-glass use, not a denial,
        a replay or a dry run."""
        return self.reason in WRITING_REASONS


@dataclass(frozen=True)
class BreakGlassAsk:
    """A request that asks to pass an exhausted budget: who, why, for how long.

    `permitted` is whether the requester is among the budget's break-glass subjects;
    `ttl` is the certificate lifetime asked for (None when the object states none).
    """

    user: str
    reason: str
    permitted: bool
    ttl: timedelta | None
    certificate: bool
    on_behalf: bool = False
    """Asked through cert-manager in someone's name: never proof of who asked."""
    budget: str = ""
    """The TrustBudget's name, which a quorum's request and its approve command name."""


ZERO = Decimal(0)


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
    witness: Witness | None = None,
    dry_run: bool = False,
    break_glass: BreakGlassAsk | None = None,
) -> Decision:
    """Decide one issuance against `account` and reserve `cost` under `key` if allowed.

    A break-glass ask matters only when the balance cannot cover the cost; otherwise the
    request is charged as usual. Raises InvalidCharge (nothing changed) for inputs the
    ledger could not store.
    """
    ledger.check_charge(account=account, key=key, amount=cost, ref=ref, witness=witness)
    unit = spec.unit
    if unit == "points" and cost != cost.to_integral_value():
        raise ledger.InvalidCharge(f"the cost {cost} is not a whole number of points")
    trust_account(status, spec, key=account, now=now)
    target = status.accounts[account]
    seen = Seen(target.balance)
    reserve = functools.partial(
        ledger.reserve,
        status,
        account=account,
        key=key,
        now=now,
        ttl=ttl,
        ref=ref,
        witness=witness,
        dry_run=dry_run,
    )
    charge = reserve(amount=cost)
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
        if break_glass is not None:
            decision = pass_break_glass(
                status,
                spec,
                account=account,
                ask=break_glass,
                message=message,
                ref=ref,
                now=now,
                dry_run=dry_run,
            )
            if decision.allowed or spec.enforcement != "warn":
                return replace(decision, seen=seen)
            message = decision.message
        elif spec.break_glass is not None:
            limit = format_duration(spec.break_glass.max_certificate_ttl)
            message += (
                " In an emergency, this budget's break-glass subjects may annotate the request "
                f"budgetops.dev/break-glass=<reason> (certificates valid at most {limit})."
            )
        if spec.enforcement != "warn":
            return Decision(False, "Exhausted", ZERO, message=message, seen=seen)
        left = target.balance
        charged = reserve(amount=left)
        note = f"{message} (warn only; {show(cost - left, unit)} {unit} uncovered)"
        if dry_run:
            return Decision(True, "DryRun", ZERO, warnings=(f"{note} (dry run, not charged)",))
        return Decision(True, "Warned", charged.amount, warnings=(note,), seen=seen)
    receipt = Receipt(account, cost, charge.balance, target.allocation, unit, target.resets_at)
    if dry_run:
        note = f"{receipt.line} (dry run, not charged)"
        return Decision(True, "DryRun", ZERO, warnings=(note,), receipt=receipt)
    return Decision(True, "Charged", cost, warnings=(receipt.line,), seen=seen, receipt=receipt)


def _break_glass_refusal(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    account: str,
    ask: BreakGlassAsk,
    now: datetime,
) -> str | None:
    """Why break-glass cannot pass this request, or None when it can."""
    rules = spec.break_glass
    if rules is None:
        return "this budget has no break-glass path"
    if ask.on_behalf:
        return (
            f"it was asked through cert-manager in {ask.user}'s name, which proves nothing of "
            "who asked; break-glass subjects create their CertificateRequest themselves"
        )
    if not ask.permitted:
        return f"{ask.user} is not among this budget's break-glass subjects"
    if rules.require_reason and not ask.reason.strip():
        return "a reason is required in the budgetops.dev/break-glass annotation"
    limit = int(rules.max_certificate_ttl.total_seconds())
    if ask.certificate and ask.ttl is None:
        return f"state the certificate lifetime (at most {limit}s) in the request"
    if ask.ttl is not None and ask.ttl > rules.max_certificate_ttl:
        return f"the certificate lifetime {int(ask.ttl.total_seconds())}s exceeds {limit}s"
    since = now - rules.rate_limit.per
    used = sum(1 for u in status.break_glass_uses if u.account == account and u.at > since)
    if used >= rules.rate_limit.count:
        return (
            f"{account} has used break-glass {used} times in the last "
            f"{format_duration(rules.rate_limit.per)}, the limit"
        )
    return None


def pass_break_glass(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    account: str,
    ask: BreakGlassAsk,
    message: str,
    ref: str,
    now: datetime,
    dry_run: bool,
) -> Decision:
    """Admit an exhausted budget's request through break-glass, or say exactly why not.

    A use charges nothing (there is nothing left to charge); it is kept in
    `status.breakGlassUses` (which the rate limit counts) and, like a refused attempt, is a
    record of its own kind in the audit chain (`break-glass`, `break-glass-refused`), with
    who asked, why, and why it was refused. With a quorum, once every other check passed,
    the requester's open request must hold its approvals (`breakglass.await_quorum`): it
    then passes once, its approvers named in the use; without one, a request is opened and
    stored with the denial that names it.
    """
    refusal = _break_glass_refusal(status, spec, account=account, ask=ask, now=now)
    reason = ask.reason.strip()[:1024]
    asked: dict[str, str | int | list[str]] = {"user": ask.user, "reason": reason}
    if ask.ttl is not None:
        asked["ttlSeconds"] = int(ask.ttl.total_seconds())
    quorum = spec.break_glass.quorum if spec.break_glass is not None else None
    request, waiting = None, None
    if refusal is None and quorum is not None:
        request, waiting = breakglass.await_quorum(
            status,
            quorum,
            budget=ask.budget,
            account=account,
            user=ask.user,
            reason=reason,
            ref=ref,
            now=now,
            dry_run=dry_run,
        )
    if request is not None:
        asked["request"] = request.id
    if refusal is not None or waiting is not None:
        if not dry_run:
            audit.note(
                status,
                at=now,
                action="break-glass-refused",
                account=account,
                ref=ref,
                detail={**asked, "refused": refusal or waiting or ""},
            )
        said = (
            f"Break-glass refused: {refusal}."
            if refusal is not None
            else f"Break-glass needs approval: {waiting}."
        )
        return Decision(False, "Exhausted", ZERO, message=f"{message} {said}")
    approvers = [a.approver for a in request.approvals] if request is not None else []
    note = f"Break-glass used by {ask.user} for {account}: {ask.reason.strip()}"
    if approvers:
        note += f" (request {asked['request']}, approved by {', '.join(approvers)})"
        asked["approvers"] = approvers
    if dry_run:
        return Decision(True, "DryRun", ZERO, warnings=(f"{note} (dry run, not recorded)",))
    if request is not None:
        request.used_at = now
    use = BreakGlassUse(
        at=now,
        account=account,
        user=ask.user,
        reason=reason,
        object=ref,
        approvers=approvers,
        announced=False,
    )
    status.break_glass_uses = [*status.break_glass_uses, use][-BREAK_GLASS_USES_KEPT:]
    audit.note(status, at=now, action="break-glass", account=account, ref=ref, detail=asked)
    return Decision(True, "BreakGlass", ZERO, warnings=(note,))


@dataclass(frozen=True)
class Release:
    """What a workload declares about the release it ships."""

    key: str
    points: int
    change_class: ChangeClass
    ref: str = ""
    unknowns: UnknownCounts | None = None
    witness: Witness | None = None
    vulnerabilities: Evidence | None = None
    """What `points` was computed from, when it was (named in the verdict)."""
    of: str | None = ""
    """What a declared release id is charged for: the object and its pod template, empty
    for a release declared without an object (the CLI). None when the key is the object's
    own (its uid, or uid and template), which is remembered only minutes (KEY_KEPT)."""


NO_OBJECT = "a release declared without an object"


def _reused(spec: RiskBudgetSpec, release: Release, charged_for: str) -> str:
    """Why a release id charged for one object and template cannot ship another."""
    return (
        f"Release id {release.key.removeprefix('release:')} was already charged to risk budget "
        f"{spec.service_id} in this window, for {charged_for or NO_OBJECT}; this is "
        f"{release.of or NO_OBJECT}. Only the same object with the same pod template replays "
        f"a release for free: give this one a new {spec.release.release_id_annotation}."
    )


def _risk_state(status: RiskBudgetStatus) -> str:
    window = status.window
    assert window is not None
    return (
        f"{status.consumed} / {status.allocation} RP ({status.percent_used}%) in window "
        f"{window.key}, which resets at {format_time(window.end)}"
    )


def _refusal(
    status: RiskBudgetStatus,
    spec: RiskBudgetSpec,
    release: Release,
    *,
    check: UnknownsCheck | None,
    warnings: list[str],
) -> tuple[Reason, str] | None:
    """Why enforcing this budget refuses the release (None: it may ship); an unknowns
    check that only warns adds its line to `warnings`."""
    service = spec.service_id
    allowed_classes = spec.bands.allows(status.band)
    if release.change_class not in allowed_classes:
        exception = grants.excepted(status, release.change_class)
        if exception is None:
            return (
                "BandFrozen",
                f"Risk budget {service} is {status.band}: {_risk_state(status)}. "
                f"In {status.band} only {', '.join(allowed_classes) or 'no'} changes may ship; "
                f"this release is {release.change_class}.",
            )
        warnings.append(
            f"{release.change_class} ships through {status.band} by the exception "
            f"{shown(exception.by)} granted until {format_time(exception.expires_at)}"
        )
    if check is not None:
        details = "; ".join(v.describe() for v in check.violations)
        if check.result == "fail":
            return (
                "UnknownsExceeded",
                f"Release {release.key} has too many unknowns for {service}: {details}.",
            )
        if check.result == "warn":
            warnings.append(f"Release {release.key} exceeds the unknowns budget: {details}")
    balance = status.accounts[service].balance
    if release.points > balance and release.change_class not in spec.bands.exhausted:
        return (
            "Exhausted",
            f"Risk budget {service} cannot cover this release: it needs {release.points} RP"
            f" and {show(balance, 'points')} remain; {_risk_state(status)}.",
        )
    return None


def admit_risk(
    status: RiskBudgetStatus,
    spec: RiskBudgetSpec,
    *,
    release: Release,
    now: datetime,
    ttl: timedelta,
    dry_run: bool = False,
) -> Decision:
    """Decide one release against the service's current window and reserve its points.

    A warn-mode budget admits what enforcing it would refuse, and charges it as if it had
    been let through: shadow mode must show what the releases consumed. Raises
    InvalidCharge (nothing changed) for inputs the ledger could not store.
    """
    service = spec.service_id
    if not 0 <= release.points <= MAX_RISK_POINTS:
        raise ledger.InvalidCharge(
            f"risk points must be between 0 and {MAX_RISK_POINTS}, not {release.points}"
        )
    points = Decimal(release.points)
    ledger.check_charge(
        account=service, key=release.key, amount=points, ref=release.ref, witness=release.witness
    )
    roll_risk_window(status, spec, now=now)
    account = status.accounts[service]
    mark = status.releases.get(release.key)
    if mark is not None and release.of is not None and mark.of != release.of:
        message = _reused(spec, release, mark.of)
        if spec.enforcement == "warn":
            return Decision(
                True, "ReleaseReused", ZERO, warnings=(f"{message} (warn only; not charged)",)
            )
        seen = Seen(account.balance, status.band)
        return Decision(False, "ReleaseReused", ZERO, message=message, seen=seen)
    if ledger.is_known(status, release.key):
        return Decision(
            True,
            "AlreadyCharged",
            Decimal(0),
            warnings=(f"Risk budget {service}: release {release.key} was already charged",),
        )
    warnings: list[str] = []
    check = None
    if spec.unknowns is not None and release.unknowns is not None:
        check = check_unknowns(spec.unknowns, release.unknowns, now=now)
    seen = Seen(account.balance, status.band, check)
    refusal = _refusal(status, spec, release, check=check, warnings=warnings)
    reason: Reason = "Charged"
    if refusal is not None:
        if spec.enforcement != "warn":
            if refusal[0] == "UnknownsExceeded" and not dry_run:
                status.unknowns.blocked += 1  # stored with the denial's verdict
            return Decision(False, refusal[0], Decimal(0), message=refusal[1], seen=seen)
        warnings.append(f"{refusal[1]} (warn only)")
        reason = "Warned"
    if points > account.balance:
        uncovered = points - account.balance
        points = account.balance
        reason = "Uncovered" if reason == "Charged" else reason
        warnings.append(
            f"Risk budget {service}: {release.change_class} admitted past the budget; "
            f"{show(uncovered, 'points')} RP uncovered"
        )
    if dry_run:
        return Decision(
            True, "DryRun", Decimal(0), warnings=(*warnings, "dry run, not charged"), seen=seen
        )
    ledger.reserve(
        status,
        account=service,
        key=release.key,
        amount=points,
        now=now,
        ttl=ttl,
        ref=release.ref,
        witness=release.witness,
        release_of=release.of,
    )
    tally(status.unknowns, release.unknowns, check)
    summarize_risk(status, spec)
    warnings.insert(
        0,
        f"Risk budget {service}: {release.points} RP ({release.change_class}), "
        f"now {_risk_state(status)}; band {status.band}",
    )
    return Decision(True, reason, points, warnings=tuple(warnings), seen=seen)
