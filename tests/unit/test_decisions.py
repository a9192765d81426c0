"""Admission decisions: exact messages, receipts, warn mode, dry runs, bands, unknowns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from budgetops.apis.ledger import KEY_KEPT, KEYS_FORGOTTEN_EVERY
from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.apis.riskbudget import ChangeClass
from budgetops.engine.decisions import BreakGlassAsk, Release, admit_risk, admit_trust
from budgetops.engine.ledger import InvalidCharge, audit, confirm
from budgetops.engine.unknowns import UnknownCounts
from tests.charges import charging

TTL = timedelta(minutes=5)
NOW = datetime(2026, 1, 1, 15, 30, tzinfo=UTC)


def trust_budget(**spec: Any) -> TrustBudget:
    base: dict[str, Any] = {
        "subjects": {"patterns": ["*"]},
        "match": [{"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}],
        "initialBalance": 100,
        "resetInterval": "24h",
    }
    return TrustBudget.model_validate({"metadata": {"name": "certs"}, "spec": base | spec})


def risk_budget(**spec: Any) -> RiskBudget:
    base: dict[str, Any] = {"serviceId": "payments-api", "tier": 2}
    return RiskBudget.model_validate(
        {"metadata": {"name": "payments-api", "namespace": "payments"}, "spec": base | spec}
    )


def charge(budget: TrustBudget, key: str, *, dry_run: bool = False, now: datetime = NOW) -> Any:
    ref = f"CertificateSigningRequest/{key}"
    return charging(key, ref=ref, now=now, ttl=TTL, dry_run=dry_run)(budget)


def test_the_101st_issuance_against_100_is_denied_calmly() -> None:
    budget = trust_budget()
    decisions = [charge(budget, f"uid-{i}") for i in range(101)]
    assert all(d.allowed for d in decisions[:100])
    assert decisions[0].warnings == (
        "Trust budget user:alice: cost 1, remaining 99 of 100, resets 2026-01-02T00:00:00Z",
    )
    last = decisions[100]
    assert not last.allowed
    assert last.cost == 0
    assert last.message == (
        "Trust budget exhausted. This request requires 1 points; 0 remain. "
        "Budget resets at 2026-01-02T00:00:00Z."
    )
    assert audit(budget.status) == []


def test_the_same_uid_is_charged_once() -> None:
    budget = trust_budget()
    assert charge(budget, "uid-1").cost == 1
    again = charge(budget, "uid-1")
    assert again.allowed
    assert again.reason == "AlreadyCharged"
    assert budget.status.accounts["user:alice"].balance == 99


def test_dry_run_decides_but_never_charges() -> None:
    budget = trust_budget(initialBalance=1)
    dry = charge(budget, "uid-1", dry_run=True)
    assert dry.allowed
    assert dry.cost == 0
    assert budget.status.accounts["user:alice"].balance == 1
    assert charge(budget, "uid-1").cost == 1, "a dry run does not make the real request a replay"


def test_warn_mode_never_denies_and_charges_what_is_left() -> None:
    budget = trust_budget(initialBalance=3, cost=2, enforcement="warn")
    charge(budget, "uid-1")
    over = charge(budget, "uid-2")
    assert (over.allowed, over.reason, over.cost) == (True, "Warned", 1)
    assert over.warnings[0].endswith("(warn only; 1 points uncovered)")
    assert over.changes_ledger
    account = budget.status.accounts["user:alice"]
    assert (account.balance, account.reserved) == (0, 3)
    assert charge(budget, "uid-2").reason == "AlreadyCharged"
    assert audit(budget.status) == []


def test_balance_resets_at_the_interval_boundary() -> None:
    budget = trust_budget(initialBalance=1)
    charge(budget, "uid-1")
    confirm(budget.status, key="uid-1", now=NOW)  # the watch saw the CSR
    assert not charge(budget, "uid-2").allowed
    after = charge(budget, "uid-3", now=datetime(2026, 1, 2, tzinfo=UTC))
    assert after.allowed
    assert after.warnings[0].endswith("resets 2026-01-03T00:00:00Z")


def test_an_unconfirmed_reservation_is_held_into_the_next_interval() -> None:
    """Only the reconciler, which can see whether the object exists, may refund it."""
    budget = trust_budget(initialBalance=1)
    charge(budget, "uid-1")
    assert not charge(budget, "uid-2", now=datetime(2026, 1, 2, tzinfo=UTC)).allowed


def test_usd_amounts_keep_two_decimals() -> None:
    budget = trust_budget(unit="USD", cost="0.25", initialBalance="0.50", resetInterval=None)
    charge(budget, "a")
    charge(budget, "b")
    denied = charge(budget, "c")
    assert denied.message == (
        "Trust budget exhausted. This request requires 0.25 USD; 0.00 remain. "
        "Budget resets at never (it has no reset interval)."
    )


def release(key: str, points: int, change_class: ChangeClass = "standard", **kw: Any) -> Release:
    return Release(key=key, points=points, change_class=change_class, **kw)


def ship(budget: RiskBudget, item: Release, *, now: datetime = NOW, dry_run: bool = False) -> Any:
    return admit_risk(budget.status, budget.spec, release=item, now=now, ttl=TTL, dry_run=dry_run)


def test_bands_tighten_what_may_ship() -> None:
    budget = risk_budget()
    assert ship(budget, release("v1", 50)).allowed
    assert budget.status.band == "Yellow"
    assert ship(budget, release("v2", 40)).allowed
    assert budget.status.band == "Red"
    frozen = ship(budget, release("v3", 5))
    assert not frozen.allowed
    assert frozen.reason == "BandFrozen"
    assert frozen.message == (
        "Risk budget payments-api is Red: 90 / 120 RP (75.0%) in window 2026-01, which resets "
        "at 2026-02-01T00:00:00Z. In Red only low-risk, security-fix, incident changes may "
        "ship; this release is standard."
    )
    assert ship(budget, release("v4", 30, "low-risk")).allowed
    assert budget.status.band == "Exhausted"
    assert not ship(budget, release("v5", 1, "low-risk")).allowed


def test_an_emergency_change_passes_an_exhausted_budget_charging_only_what_is_left() -> None:
    budget = risk_budget(allocation=10)
    fix = ship(budget, release("cve-1", 25, "security-fix"))
    assert fix.allowed
    assert fix.reason == "Uncovered"
    assert fix.cost == 10
    assert "15 RP uncovered" in fix.warnings[1]
    assert audit(budget.status) == []


def test_a_release_that_does_not_fit_is_denied_with_what_remains() -> None:
    budget = risk_budget(allocation=200, thresholds={"yellow": 90, "red": 95, "exhausted": 100})
    ship(budget, release("v1", 170))
    denied = ship(budget, release("v2", 40))
    assert not denied.allowed
    assert denied.message.startswith(
        "Risk budget payments-api cannot cover this release: it needs 40 RP and 30 remain;"
    )


def test_a_release_id_is_charged_once_per_window() -> None:
    budget = risk_budget()
    ship(budget, release("v1", 30))
    again = ship(budget, release("v1", 30))
    assert again.reason == "AlreadyCharged"
    assert budget.status.consumed == 30


def test_unknowns_warn_or_block() -> None:
    limits = {"maxUnknownCount": 2, "maxCumulativeUncertainty": "1.00", "action": "block"}
    budget = risk_budget(unknowns=limits)
    counts = UnknownCounts(by_reason={"Reachability": 3}, cumulative_uncertainty=Decimal("0.5"))
    blocked = ship(budget, release("v1", 5, unknowns=counts))
    assert not blocked.allowed
    assert blocked.message == (
        "Release v1 has too many unknowns for payments-api: "
        "unknowns in total: 3 exceeds the limit of 2."
    )
    warned = risk_budget(unknowns={**limits, "action": "warn"})
    decision = ship(warned, release("v1", 5, unknowns=counts))
    assert decision.allowed
    assert any("exceeds the unknowns budget" in w for w in decision.warnings)


def test_risk_dry_run_charges_nothing() -> None:
    budget = risk_budget()
    assert ship(budget, release("v1", 30), dry_run=True).cost == 0
    assert budget.status.consumed == 0


@pytest.mark.parametrize("enforcement", ["enforce", "warn"])
def test_warn_mode_for_risk(enforcement: str) -> None:
    budget = risk_budget(allocation=10, enforcement=enforcement)
    decision = ship(budget, release("v1", 20))
    assert decision.allowed is (enforcement == "warn")
    assert budget.status.consumed == (10 if enforcement == "warn" else 0)


def test_a_warn_budget_in_red_still_counts_what_ships() -> None:
    """Before, a warn-mode budget admitted a frozen band's release at cost 0: shadow mode
    stopped counting exactly when it mattered."""
    budget = risk_budget(enforcement="warn")
    ship(budget, release("v1", 90))
    assert budget.status.band == "Red"
    frozen = ship(budget, release("v2", 5))
    assert (frozen.allowed, frozen.reason, frozen.cost) == (True, "Warned", 5)
    assert frozen.warnings[1].endswith("this release is standard. (warn only)")
    assert budget.status.consumed == 95


@pytest.mark.parametrize(
    ("points", "key", "error"),
    [
        (-5, "v1", "risk points must be between 0 and 100000, not -5"),
        (100_001, "v1", "risk points must be between 0 and 100000"),
        (1, "", "the idempotency key must not be empty"),
        (1, "r" * 254, "the idempotency key is 254 characters long; at most 253 fit"),
    ],
)
def test_a_release_the_ledger_could_not_store_is_refused_and_changes_nothing(
    points: int, key: str, error: str
) -> None:
    budget = risk_budget()
    before = budget.status.model_dump()
    with pytest.raises(InvalidCharge, match=error):
        ship(budget, release(key, points))
    assert budget.status.model_dump() == before


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"account": "user:" + "a" * 300}, "the account is 305 characters long; at most 253"),
        ({"key": ""}, "the idempotency key must not be empty"),
        ({"key": "k" * 254}, "the idempotency key is 254 characters"),
        ({"ref": "x" * 513}, "the object's description is 513 characters long; at most 512"),
        ({"cost": Decimal(-1)}, "the amount -1 is not between 0 and"),
        ({"cost": Decimal("0.5")}, "the cost 0.5 is not a whole number of points"),
        ({"cost": Decimal("1E+1")}, "is not written with 0 to 6 decimals"),
        ({"cost": Decimal(10**28 + 1)}, "is not between 0 and 999999999999999.99"),
    ],
)
def test_an_issuance_the_ledger_could_not_store_is_refused_and_changes_nothing(
    overrides: dict[str, Any], error: str
) -> None:
    budget = trust_budget()
    charge(budget, "first")
    stored = budget.status.to_wire()
    arguments: dict[str, Any] = {
        "account": "user:alice",
        "cost": Decimal(1),
        "key": "uid-2",
        "ref": "CertificateSigningRequest/2",
    }
    with pytest.raises(InvalidCharge, match=error):
        admit_trust(budget.status, budget.spec, now=NOW, ttl=TTL, **(arguments | overrides))
    assert budget.status.to_wire() == stored
    type(budget.status).model_validate(stored)  # what is stored reads back


def test_a_changed_spec_applies_to_existing_accounts_without_a_refill() -> None:
    budget = trust_budget(initialBalance=5, resetInterval=None)
    for uid in ("a", "b", "c"):
        charge(budget, uid)
    account = budget.status.accounts["user:alice"]
    assert account.resets_at is None
    budget.spec = trust_budget(initialBalance=4, resetInterval="24h").spec
    decision = charge(budget, "d")
    assert decision.warnings[0] == (
        "Trust budget user:alice: cost 1, remaining 0 of 4, resets 2026-01-02T00:00:00Z"
    )
    assert not charge(budget, "e").allowed, "adopting an interval does not refill the balance"
    budget.spec = trust_budget(initialBalance=2, resetInterval="24h").spec
    charge(budget, "f")
    assert account.allocation == 4, "an allocation never drops below what is committed"
    assert audit(budget.status) == []


BREAK_GLASS = {
    "subjects": {"groups": ["oncall"]},
    "maxCertificateTTL": "1h",
    "rateLimit": {"count": 2, "per": "24h"},
}


def ask(**overrides: Any) -> BreakGlassAsk:
    fields: dict[str, Any] = {
        "user": "alice",
        "reason": "INC-42 prod down",
        "permitted": True,
        "ttl": timedelta(minutes=30),
        "certificate": True,
    }
    return BreakGlassAsk(**(fields | overrides))


def exhausted(break_glass: dict[str, Any] = BREAK_GLASS) -> TrustBudget:
    budget = trust_budget(initialBalance=1, breakGlass=break_glass)
    charge(budget, "first")
    return budget


def glass(budget: TrustBudget, key: str, request: BreakGlassAsk, **kw: Any) -> Any:
    return admit_trust(
        budget.status,
        budget.spec,
        account="user:alice",
        cost=Decimal(1),
        key=key,
        ref=f"CertificateSigningRequest/{key}",
        now=kw.get("now", NOW),
        ttl=TTL,
        dry_run=kw.get("dry_run", False),
        break_glass=request,
    )


def test_break_glass_passes_an_exhausted_budget_within_its_limits() -> None:
    budget = exhausted()
    first = glass(budget, "bg-1", ask())
    assert (first.allowed, first.reason, first.cost) == (True, "BreakGlass", 0)
    assert first.warnings == ("Break-glass used by alice for user:alice: INC-42 prod down",)
    assert first.changes_ledger
    [use] = budget.status.break_glass_uses
    assert (use.user, use.object) == ("alice", "CertificateSigningRequest/bg-1")
    assert glass(budget, "bg-2", ask()).allowed
    third = glass(budget, "bg-3", ask())
    assert not third.allowed
    assert third.message.endswith(
        "Break-glass refused: user:alice has used break-glass 2 times in the last 24h, the limit."
    )
    later = glass(budget, "bg-4", ask(), now=NOW + timedelta(hours=25))
    assert later.allowed, "the rate limit is a sliding window"
    assert audit(budget.status) == []


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (ask(permitted=False), "alice is not among this budget's break-glass subjects"),
        (ask(reason="  "), "a reason is required in the budgetops.dev/break-glass annotation"),
        (ask(ttl=timedelta(hours=2)), "the certificate lifetime 7200s exceeds 3600s"),
        (ask(ttl=None), "state the certificate lifetime (at most 3600s) in the request"),
    ],
)
def test_break_glass_refusals_say_why(request_: BreakGlassAsk, refusal: str) -> None:
    decision = glass(exhausted(), "bg", request_)
    assert not decision.allowed
    assert decision.message == (
        "Trust budget exhausted. This request requires 1 points; 0 remain. Budget resets at "
        f"2026-01-02T00:00:00Z. Break-glass refused: {refusal}."
    )


def test_break_glass_is_not_used_while_the_budget_covers_the_request() -> None:
    budget = trust_budget(initialBalance=5, breakGlass=BREAK_GLASS)
    decision = glass(budget, "bg", ask())
    assert decision.reason == "Charged"
    assert budget.status.break_glass_uses == []


def test_break_glass_dry_run_records_nothing() -> None:
    budget = exhausted()
    assert glass(budget, "bg", ask(), dry_run=True).reason == "DryRun"
    assert budget.status.break_glass_uses == []


def test_a_warn_budget_never_denies_even_when_break_glass_is_refused() -> None:
    budget = trust_budget(initialBalance=1, breakGlass=BREAK_GLASS, enforcement="warn")
    charge(budget, "first")
    decision = glass(budget, "bg", ask(permitted=False))
    assert decision.allowed
    assert "Break-glass refused" in decision.warnings[0]


def test_an_exhausted_denial_names_the_break_glass_path_when_there_is_one() -> None:
    denied = charge(exhausted(), "plain")
    assert denied.message.endswith(
        "In an emergency, this budget's break-glass subjects may annotate the request "
        "budgetops.dev/break-glass=<reason> (certificates valid at most 1h)."
    )
    plain = trust_budget(initialBalance=1)
    charge(plain, "a")
    denied_plain = charge(plain, "b")
    assert not denied_plain.allowed
    assert "break-glass" not in denied_plain.message


def test_a_key_is_remembered_for_minutes_however_many_settle_after_it() -> None:
    """Before, after 256 other settlements an old uid was charged again; a key is now kept
    for KEY_KEPT after it settled, whatever the count, across a reset too."""
    budget = trust_budget(initialBalance=1000)
    for n in range(300):
        charge(budget, f"csr-{n}")
        confirm(budget.status, key=f"csr-{n}", now=NOW)
    again = charge(budget, "csr-0", now=NOW + KEY_KEPT)
    assert (again.reason, again.cost) == ("AlreadyCharged", 0)
    later = NOW + KEY_KEPT + KEYS_FORGOTTEN_EVERY + timedelta(seconds=1)
    assert charge(budget, "csr-0", now=later).reason == "Charged", "an old uid is let go"
    assert "csr-299" not in budget.status.settled


def test_a_ledger_keeps_no_more_keys_than_the_last_minutes_settled() -> None:
    """Memory is bounded by time: a charge a second for an hour keeps about six minutes of
    keys, and never refuses one."""
    budget = trust_budget(initialBalance=10_000)
    for n in range(3600):
        now = NOW + timedelta(seconds=n)
        assert charge(budget, f"uid-{n}", now=now).reason == "Charged"
        confirm(budget.status, key=f"uid-{n}", now=now)
    kept = len(budget.status.settled)
    assert KEY_KEPT.total_seconds() <= kept <= (KEY_KEPT + KEYS_FORGOTTEN_EVERY).total_seconds()


def test_settled_keys_from_an_older_status_read_back_and_are_let_go() -> None:
    status = TrustBudget.model_validate(
        {**trust_budget().to_wire(), "status": {"settled": ["old-1", "old-2"]}}
    ).status
    assert list(status.settled) == ["old-1", "old-2"]
    budget = trust_budget()
    budget.status = status
    assert charge(budget, "old-1").reason == "Charged", "settled long ago: no retry is left"
    assert list(budget.status.settled) == []
