"""One reconcile of one budget, decided purely: what changes in its status and what to say.

The reconciler calls these inside the store's compare-and-swap, like admission calls its
decisions, so a charge and a reset that race are both kept: whichever writes second re-runs
on the other's result. Everything depends on the status, the spec, `now` and what the
reconciler saw in the API server (`seen`), never on "a timer fired".
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from budgetops.apis.common import Condition, format_duration, format_time
from budgetops.apis.ledger import Account, Ledger, Reservation
from budgetops.apis.numbers import show
from budgetops.apis.riskbudget import Band, ChangeClass, RiskBudgetSpec, RiskBudgetStatus
from budgetops.apis.trustbudget import AlertKind, TrustBudgetSpec, TrustBudgetStatus
from budgetops.engine import breakglass, grants, leases, ledger
from budgetops.engine.alerts import UsageSamples, account_alerts
from budgetops.engine.bands import BAND_ORDER, percent_used
from budgetops.engine.conditions import is_true, set_condition
from budgetops.engine.notices import Notice, Severity
from budgetops.engine.rollover import (
    bring_current_trust,
    roll_risk_window,
    summarize_risk,
    summarize_trust,
)

ACCOUNT_NOTICES_MAX = 20
"""Per-account notices per reconcile; beyond it one notice says how many more there were."""

NAMED_IN_CONDITION = 5
"""Accounts named in a condition's message; the count covers the rest."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the API server holds at a reservation's witness path."""

    uid: str
    generation: int = 0


class Unreadable(enum.Enum):
    """A witness path that was looked for and could not be read."""

    UNREADABLE = "unreadable"


UNREADABLE: Final = Unreadable.UNREADABLE
"""No permission to list the collection, the resource is no longer served, or the API
server failed: the reconciler cannot tell whether the object exists."""

Seen = Mapping[str, Sighting | Unreadable | None]
"""Witness paths the reconciler looked at: a Sighting, None when nothing is there, or
UNREADABLE. A path missing from the map was not looked at in this pass (a reservation
made after the look): its reservation waits for the next pass, whatever its expiry."""


@dataclass
class Outcome:
    """What one reconcile did; `changed` says whether the status must be written."""

    changed: bool = False
    notices: list[Notice] = field(default_factory=list)
    confirmed: int = 0
    refunded: int = 0
    unverified: int = 0
    """Kept as spent without being seen; not counted in `confirmed`."""


def awaiting_witness(status: Ledger) -> list[str]:
    """Witness paths of the reservations still waiting to be seen, without repeats."""
    paths = {
        held.witness.path
        for account in status.accounts.values()
        for held in account.reservations.values()
        if held.witness is not None
    }
    return sorted(paths)


def next_due(status: Ledger) -> datetime | None:
    """The earliest instant at which something in this status falls due by itself: an
    account's reset (a RiskBudget's window end is its account's `resetsAt`), a
    reservation's expiry, a lease's expiry (or the end of a closed one's memory), or a
    grant's."""
    instants = [
        moment
        for account in status.accounts.values()
        for moment in (
            account.resets_at,
            *(held.expires_at for held in account.reservations.values()),
        )
        if moment is not None
    ]
    instants += [d for d in (leases.next_due(status), grants.next_expiry(status)) if d]
    return min(instants, default=None)


def next_sample_due(
    status: TrustBudgetStatus, spec: TrustBudgetSpec, samples: UsageSamples
) -> datetime | None:
    """The earliest instant a usage reading that came too soon to keep can be kept. Rapid
    depletion is judged from these readings, and no status change may come to prompt the
    look that takes them."""
    if not spec.alerts.rapid_depletion.percent:
        return None
    within = spec.alerts.rapid_depletion.within
    instants = [
        samples.next_reading(name, used=account.allocation - account.balance, within=within)
        for name, account in status.accounts.items()
    ]
    return min((moment for moment in instants if moment is not None), default=None)


def _some(names: list[str]) -> str:
    """The first NAMED_IN_CONDITION names, and how many more there are."""
    shown = ", ".join(names[:NAMED_IN_CONDITION])
    more = len(names) - NAMED_IN_CONDITION
    return f"{shown} and {more} more" if more > 0 else shown


def _verdict(held: Reservation, seen: Seen | None, now: datetime) -> tuple[str, str]:
    """(`confirm` | `refund` | `unverified` | `wait`, why) for one reservation."""
    witness = held.witness
    expired = held.expires_at <= now
    if witness is None or seen is None:
        return ("confirm" if expired else "wait"), ""
    if witness.path not in seen:
        return "wait", ""
    sighting = seen[witness.path]
    if sighting is UNREADABLE:
        return ("unverified" if expired else "wait"), ""
    if sighting is not None and sighting.uid == witness.uid:
        if sighting.generation >= witness.generation:
            return "confirm", ""
        why = "was never changed as admitted (the update did not land)"
    elif sighting is not None:
        why = "was replaced by another object of the same name"
    else:
        why = "never appeared (another admission step or the API server refused it)"
    return ("refund" if expired else "wait"), why


def settle_reservations(
    status: Ledger,
    *,
    budget: str,
    amount_text: Callable[[Decimal], str],
    seen: Seen | None,
    now: datetime,
    outcome: Outcome,
) -> None:
    """Confirm what was seen, refund what expired unseen, keep what cannot be read as spent.

    An expired reservation whose witness could not be read is confirmed, not refunded: a
    budget that cannot check errs on the side of the limit, and says so in a Warning.
    With `seen` None nobody can look (the embedded ledger has no API server to ask): every
    reservation is confirmed when it expires, as one without a witness is.
    """
    for name, account in list(status.accounts.items()):
        for key, held in list(account.reservations.items()):
            verdict, why = _verdict(held, seen, now)
            if verdict == "wait":
                continue
            outcome.changed = True
            what = held.object or key
            amount = amount_text(held.amount)
            if verdict == "refund":
                ledger.refund(status, key=key, now=now)
                outcome.refunded += 1
                summary = f"{name}: {amount} refunded: {what} {why}"
                outcome.notices.append(Notice(budget, "ReservationRefunded", summary, at=now))
                continue
            seen_created = (
                verdict == "confirm" and held.witness is not None and held.witness.created
            )
            ledger.confirm(status, key=key, now=now, remember=not seen_created)
            if verdict == "confirm":
                outcome.confirmed += 1
            else:
                assert held.witness is not None
                outcome.unverified += 1
                outcome.notices.append(
                    Notice(
                        budget,
                        "ReservationUnverified",
                        f"{name}: {amount} kept as spent for {what}: BudgetOps could not read "
                        f"{held.witness.path} to confirm it; check the operator's permissions",
                        severity="warning",
                        at=now,
                    )
                )


# TrustBudget ------------------------------------------------------------------------------

_ALERT_SEVERITY: dict[AlertKind, Severity] = {
    "Exhausted": "critical",
    "LowBalance": "warning",
    "RapidDepletion": "warning",
}


def _balance_text(account: Account, spec: TrustBudgetSpec) -> str:
    unit = spec.unit
    remaining = f"{show(account.balance, unit)} / {show(account.allocation, unit)} {unit} remain"
    resets = f"; resets at {format_time(account.resets_at)}" if account.resets_at else ""
    return f"{remaining} ({percent_used(account.balance, account.allocation)}%){resets}"


def _alert_summary(
    kind: AlertKind, name: str, account: Account, spec: TrustBudgetSpec, recent: Decimal
) -> str:
    if kind == "RapidDepletion":
        within = format_duration(spec.alerts.rapid_depletion.within)
        share = percent_used(recent, account.allocation)
        return (
            f"{name}: {show(recent, spec.unit)} {spec.unit} ({share}%) consumed within "
            f"{within}; {_balance_text(account, spec)}"
        )
    what = "exhausted" if kind == "Exhausted" else "balance low"
    return f"{name}: {what}, {_balance_text(account, spec)}"


def _alert_headline(kind: AlertKind, name: str, account: Account) -> str:
    if kind == "Exhausted":
        return f"Trust Budget Exhausted for {name}"
    if kind == "LowBalance":
        left = percent_used(account.balance, account.allocation)
        return f"Trust Budget low for {name}: {left}% left"
    return f"Trust Budget depleting rapidly for {name}"


def _alert_advice(kind: AlertKind, spec: TrustBudgetSpec) -> tuple[str, ...]:
    """What to do about an account alert, after the seed's recommended actions."""
    if kind == "LowBalance":
        return ("Review how often this account issues before it runs out.",)
    if kind == "RapidDepletion":
        return ("Check for a leaked credential or a runaway automation.",)
    refused = (
        "This budget only warns: issuance goes on, uncovered."
        if spec.enforcement == "warn"
        else "Issuance to this account is refused until it resets."
    )
    return (refused, "Check whether this was expected; if not, look for credential abuse.")


def _trust_conditions(status: TrustBudgetStatus, *, now: datetime, generation: int | None) -> bool:
    changed = False
    for kind in ("Exhausted", "LowBalance", "RapidDepletion"):
        names = sorted(n for n, raised in status.alerting.items() if kind in raised)
        changed |= set_condition(
            status.conditions,
            type=kind,
            status="True" if names else "False",
            reason=kind if names else f"No{kind}",
            message=f"{len(names)} accounts: {_some(names)}" if names else "",
            now=now,
            generation=generation,
        )
    return changed


def reconcile_trust(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    budget: str,
    generation: int | None,
    now: datetime,
    seen: Seen | None,
    samples: UsageSamples,
) -> Outcome:
    """Reset due accounts, settle reservations, raise and clear account alerts, drop
    break-glass requests past their deadline and announce what break-glass did."""
    outcome = Outcome()
    before = {k: (a.window_start, a.allocation) for k, a in status.accounts.items()}
    lowest, exhausted = status.lowest_balance, status.exhausted_accounts
    measured = status.spent_by.percent_used
    held = len(status.grants)
    bring_current_trust(status, spec, now=now)
    outcome.changed |= held != len(status.grants)
    reset = [k for k, a in status.accounts.items() if before[k][0] != a.window_start]
    if reset or any(before[k][1] != a.allocation for k, a in status.accounts.items()):
        outcome.changed = True
    outcome.changed |= measured != status.spent_by.percent_used
    if reset:
        nxt = status.accounts[reset[0]].resets_at
        own = sum(1 for k in reset if k in spec.agent_allocations)
        outcome.notices.append(
            Notice(
                budget,
                "AccountsReset",
                f"{len(reset)} accounts reset to {show(spec.initial_balance, spec.unit)} "
                f"{spec.unit}"
                + (f" ({own} to their agent's own allocation)" if own else "")
                + (f"; next reset at {format_time(nxt)}" if nxt else ""),
                at=now,
            )
        )
    settle_reservations(
        status,
        budget=budget,
        amount_text=lambda amount: f"{show(amount, spec.unit)} {spec.unit}",
        seen=seen,
        now=now,
        outcome=outcome,
    )
    _expire_leases(status, spec, budget=budget, now=now, outcome=outcome)
    outcome.changed |= breakglass.drop_expired(status, now)
    told = breakglass.announce(status, spec, budget=budget, now=now)
    outcome.notices += told
    outcome.changed |= bool(told)
    summarize_trust(status)
    _alert_accounts(
        status, spec, budget=budget, now=now, samples=samples, reset=set(reset), outcome=outcome
    )
    outcome.changed |= (lowest, exhausted) != (status.lowest_balance, status.exhausted_accounts)
    outcome.changed |= _trust_conditions(status, now=now, generation=generation)
    _mark_ready(status, outcome, f"{len(status.accounts)} accounts", now, generation)
    return outcome


def _expire_leases(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    budget: str,
    now: datetime,
    outcome: Outcome,
) -> None:
    """Return what expired leases still lend; forget leases closed longer than their ttl."""
    held = sum(len(a.leases) for a in status.accounts.values())
    expired = leases.expire(status, now=now)
    if expired or held != sum(len(a.leases) for a in status.accounts.values()):
        outcome.changed = True
    if expired:
        returned = sum((amount for _, _, amount in expired), Decimal(0))
        outcome.notices.append(
            Notice(
                budget,
                "LeasesExpired",
                f"{len(expired)} leases expired; {show(returned, spec.unit)} {spec.unit} "
                f"returned to {_some(sorted({name for name, _, _ in expired}))}",
                at=now,
            )
        )


def _alert_accounts(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    budget: str,
    now: datetime,
    samples: UsageSamples,
    reset: set[str],
    outcome: Outcome,
) -> None:
    """Compare each account's alerts with what was last announced; announce the new ones."""
    within = spec.alerts.rapid_depletion.within
    raised_now: list[tuple[AlertKind, str, Account, Decimal]] = []
    recovered: list[str] = []
    alerting: dict[str, list[AlertKind]] = {}
    for name, account in status.accounts.items():
        used = account.allocation - account.balance
        recent = samples.consumed_within(
            name, used=used, now=now, within=within, window_start=account.window_start
        )
        raised = account_alerts(account, spec.alerts, consumed_recently=recent)
        before = status.alerting.get(name, [])
        raised_now += [(kind, name, account, recent) for kind in raised if kind not in before]
        if before and not raised and name not in reset:
            recovered.append(name)
        if raised:
            alerting[name] = raised
    samples.forget(keep=set(status.accounts))
    if alerting != status.alerting:
        status.alerting, outcome.changed = alerting, True
    for kind, name, account, recent in raised_now[:ACCOUNT_NOTICES_MAX]:
        outcome.notices.append(
            Notice(
                budget,
                kind,
                _alert_summary(kind, name, account, spec, recent),
                severity=_ALERT_SEVERITY[kind],
                at=now,
                details=_alert_advice(kind, spec),
                headline=_alert_headline(kind, name, account),
            )
        )
    if len(raised_now) > ACCOUNT_NOTICES_MAX:
        outcome.notices.append(
            Notice(
                budget,
                "LowBalance",
                f"{len(raised_now) - ACCOUNT_NOTICES_MAX} more account alerts raised; "
                "see the budget's conditions",
                severity="warning",
                at=now,
            )
        )
    if recovered:
        outcome.notices.append(
            Notice(
                budget,
                "Recovered",
                f"{len(recovered)} accounts no longer alerting: {_some(recovered)}",
                at=now,
            )
        )


def _mark_ready(
    status: TrustBudgetStatus | RiskBudgetStatus,
    outcome: Outcome,
    message: str,
    now: datetime,
    generation: int | None,
) -> None:
    """Ready, and the generation this status answers for: the last step of every reconcile."""
    outcome.changed |= set_condition(
        status.conditions,
        type="Ready",
        status="True",
        reason="Reconciled",
        message=message,
        now=now,
        generation=generation,
    )
    if status.observed_generation != generation:
        status.observed_generation, outcome.changed = generation, True


# RiskBudget -------------------------------------------------------------------------------

_BAND_CONDITIONS: tuple[tuple[str, Band], ...] = (
    ("Elevated", "Yellow"),
    ("Restricted", "Red"),
    ("Exhausted", "Exhausted"),
)
"""Each condition is True from its band on, so together they spell the band, and each
one's lastTransitionTime says when the budget crossed that line."""

_BAND_SEVERITY: dict[Band, Severity] = {
    "Green": "info",
    "Yellow": "warning",
    "Red": "critical",
    "Exhausted": "critical",
}
"""The seed's: `[Warning]` at Yellow, `[Critical]` at Red or Exhausted."""

_CLASS_WORDS: dict[ChangeClass, str] = {
    "standard": "standard changes",
    "low-risk": "low-risk changes",
    "security-fix": "security fixes",
    "incident": "incident responses",
}


def _in_words(classes: list[ChangeClass]) -> str:
    words = [_CLASS_WORDS[c] for c in _CLASS_WORDS if c in classes]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def band_advice(band: Band, allowed: list[ChangeClass]) -> tuple[str, ...]:
    """What to do in `band`: the seed's advice, and what this budget's band policy lets
    through whenever it holds something back (so a custom policy is never misstated)."""
    advice = []
    if band == "Yellow":
        advice.append("Consider pausing non-critical changes until the next budget window.")
    if not allowed:
        advice.append("No change may ship.")
    elif set(allowed) != set(_CLASS_WORDS):
        advice.append(f"Only {_in_words(allowed)} are allowed.")
    if band == "Exhausted":
        advice.append("Contact the platform team for emergency capacity.")
    return tuple(advice)


def band_headline(band: Band, service: str, percent: str) -> str:
    """A band change's subject, as the seed words it."""
    if band == "Exhausted":
        return f"Risk Budget Exhausted for {service}"
    return f"Risk Budget at {percent}% for {service}"


def announced_band(conditions: list[Condition]) -> Band:
    """The band the conditions last announced (Green when none was)."""
    band: Band = "Green"
    for kind, at_least in _BAND_CONDITIONS:
        if is_true(conditions, kind):
            band = at_least
    return band


def _threshold(spec: RiskBudgetSpec, band: Band) -> int:
    thresholds = spec.thresholds
    return {"Yellow": thresholds.yellow, "Red": thresholds.red}.get(band, thresholds.exhausted)


def _risk_numbers(status: RiskBudgetStatus) -> str:
    return f"{status.consumed} / {status.allocation} RP ({status.percent_used}%)"


def _window_notices(
    status: RiskBudgetStatus, service: str, *, budget: str, closed: int, now: datetime
) -> list[Notice]:
    """One notice per closed window (the last three at most); the last also says what the
    new window opens with, so a rollover is one message, not two."""
    assert status.window is not None
    notices = []
    recent = status.history[len(status.history) - closed :][-3:]
    for summary in recent:
        share = percent_used(Decimal(summary.consumed), Decimal(summary.allocated))
        details: tuple[str, ...] = (summary.earned_reason,) if summary.earned_increase else ()
        if summary is recent[-1]:
            earned = f", {status.earned_increase} RP earned" if status.earned_increase else ""
            details += (
                f"Window {status.window.key} opens with {status.allocation} RP{earned}; "
                f"resets at {format_time(status.window.end)}",
            )
        notices.append(
            Notice(
                budget,
                "EarnedCapacity" if summary.earned_increase else "WindowClosed",
                f"{service}: window {summary.window.key} closed at {summary.consumed} / "
                f"{summary.allocated} RP ({share}%), reached {summary.band_reached}",
                at=now,
                details=details,
            )
        )
    return notices


def reconcile_risk(
    status: RiskBudgetStatus,
    spec: RiskBudgetSpec,
    *,
    budget: str,
    generation: int | None,
    now: datetime,
    seen: Seen | None,
) -> Outcome:
    """Roll the window, settle reservations, move the band conditions and say so."""
    outcome = Outcome()
    service = spec.service_id
    previous = announced_band(status.conditions)
    fresh = status.window is None
    held = len(status.grants)
    try:
        closed = roll_risk_window(status, spec, now=now)
    except ledger.InvalidCharge as error:  # the tier table lacks its tier: nothing changed
        outcome.changed |= set_condition(
            status.conditions,
            type="Ready",
            status="False",
            reason="WindowNotSized",
            message=str(error),
            now=now,
            generation=generation,
        )
        return outcome
    outcome.changed |= fresh or closed > 0 or held != len(status.grants)
    if closed:
        outcome.notices += _window_notices(status, service, budget=budget, closed=closed, now=now)
    numbers = _risk_numbers(status)
    settle_reservations(
        status,
        budget=budget,
        amount_text=lambda amount: f"{show(amount, 'points')} RP",
        seen=seen,
        now=now,
        outcome=outcome,
    )
    summarize_risk(status, spec)
    outcome.changed |= numbers != _risk_numbers(status)
    band = status.band
    for kind, at_least in _BAND_CONDITIONS:
        crossed = BAND_ORDER[band] >= BAND_ORDER[at_least]
        outcome.changed |= set_condition(
            status.conditions,
            type=kind,
            status="True" if crossed else "False",
            reason=band,
            message=f"{at_least} from {_threshold(spec, at_least)}% of the allocation",
            now=now,
            generation=generation,
        )
    if band != previous:
        classes = spec.bands.allows(band)
        assert status.window is not None
        outcome.notices.append(
            Notice(
                budget,
                "BandChanged",
                f"{service}: {previous} -> {band}, {_risk_numbers(status)}",
                severity=_BAND_SEVERITY[band],
                at=now,
                details=(
                    *band_advice(band, classes),
                    f"Still allowed: {', '.join(classes) or 'nothing'}",
                    f"Window {status.window.key} resets at {format_time(status.window.end)}",
                ),
                headline=band_headline(band, service, status.percent_used),
            )
        )
    _mark_ready(status, outcome, f"band {band}", now, generation)
    return outcome
