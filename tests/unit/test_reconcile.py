"""One reconcile, decided purely: confirmations, refunds, resets, windows and transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from budgetops.apis.ledger import Witness
from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.decisions import Release, admit_risk, admit_trust
from budgetops.engine.ledger import audit
from budgetops.engine.reconcile import (
    UNREADABLE,
    Outcome,
    Seen,
    Sighting,
    announced_band,
    awaiting_witness,
    next_due,
    reconcile_risk,
    reconcile_trust,
)

from .test_decisions import risk_budget, trust_budget

TTL = timedelta(minutes=5)
START = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
CSR = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def issue(
    budget: TrustBudget,
    name: str,
    *,
    at: datetime = START,
    account: str = "user:alice",
    created: bool = False,
) -> None:
    decision = admit_trust(
        budget.status,
        budget.spec,
        account=account,
        cost=budget.spec.cost,
        key=f"uid-{name}",
        ref=f"CertificateSigningRequest/{name}",
        now=at,
        ttl=TTL,
        witness=Witness(path=f"{CSR}/{name}", uid=f"uid-{name}", created=created),
    )
    assert decision.allowed


def run_trust(
    budget: TrustBudget,
    now: datetime,
    seen: Seen | None = None,
    samples: UsageSamples | None = None,
) -> Outcome:
    return reconcile_trust(
        budget.status,
        budget.spec,
        budget="TrustBudget certs",
        generation=1,
        now=now,
        seen=seen or {},
        samples=samples if samples is not None else UsageSamples(),
    )


def all_present(budget: TrustBudget) -> Seen:
    return {
        path: Sighting(f"uid-{path.rsplit('/', 1)[1]}") for path in awaiting_witness(budget.status)
    }


def summaries(outcome: Outcome) -> list[str]:
    return [n.summary for n in outcome.notices]


def test_a_seen_object_confirms_its_reservation_and_nothing_else_moves() -> None:
    budget = trust_budget()
    issue(budget, "a")
    issue(budget, "b")
    assert awaiting_witness(budget.status) == [f"{CSR}/a", f"{CSR}/b"]
    outcome = run_trust(budget, START + timedelta(seconds=2), {f"{CSR}/a": Sighting("uid-a")})
    account = budget.status.accounts["user:alice"]
    assert (outcome.confirmed, outcome.refunded) == (1, 0)
    assert (account.spent, account.reserved, account.balance) == (1, 1, 98)
    assert audit(budget.status) == []


def test_the_key_of_a_created_object_once_seen_is_not_remembered() -> None:
    """What a budget charged many times a second kept most: two minutes of keys of objects
    already stored, whose creation no request can carry again."""
    budget = trust_budget()
    issue(budget, "made", created=True)
    issue(budget, "changed")  # an update (or a request with no witness) keeps its key
    issue(budget, "gone", created=True)
    seen = {f"{CSR}/made": Sighting("uid-made"), f"{CSR}/changed": Sighting("uid-changed")}
    run_trust(budget, START + timedelta(seconds=2), seen)
    assert list(budget.status.settled) == ["uid-changed"]
    run_trust(budget, START + TTL, {f"{CSR}/gone": None})  # refunded unseen: kept
    assert list(budget.status.settled) == ["uid-changed", "uid-gone"]
    account = budget.status.accounts["user:alice"]
    assert (account.spent, account.reserved, account.balance) == (2, 0, 98)


def test_an_object_that_never_appeared_is_refunded_at_expiry_and_says_why() -> None:
    budget = trust_budget()
    issue(budget, "gone")
    absent: Seen = {f"{CSR}/gone": None}
    assert run_trust(budget, START + TTL - timedelta(seconds=1), absent).refunded == 0
    outcome = run_trust(budget, START + TTL, absent)
    assert outcome.refunded == 1
    assert budget.status.accounts["user:alice"].balance == 100
    [refund] = [n for n in outcome.notices if n.reason == "ReservationRefunded"]
    assert refund.summary == (
        "user:alice: 1 points refunded: CertificateSigningRequest/gone never appeared "
        "(another admission step or the API server refused it)"
    )
    assert run_trust(budget, START + TTL, absent).refunded == 0  # refunded once


def test_a_namesake_with_another_uid_does_not_confirm() -> None:
    budget = trust_budget()
    issue(budget, "x")
    outcome = run_trust(budget, START + TTL, {f"{CSR}/x": Sighting("someone-else")})
    assert outcome.refunded == 1
    assert "was replaced by another object of the same name" in summaries(outcome)[0]


def test_an_update_that_did_not_land_is_refunded() -> None:
    budget = risk_budget()
    path = "/apis/apps/v1/namespaces/payments/deployments/api"
    release = Release("uid-d/abc", 30, "standard", witness=Witness(path, "uid-d", generation=4))
    admit_risk(budget.status, budget.spec, release=release, now=START, ttl=TTL)
    late = START + TTL
    kept = reconcile_risk(
        budget.status,
        budget.spec,
        budget="rb",
        generation=1,
        now=late,
        seen={path: Sighting("uid-d", generation=4)},
    )
    assert kept.confirmed == 1
    budget = risk_budget()
    admit_risk(budget.status, budget.spec, release=release, now=START, ttl=TTL)
    lost = reconcile_risk(
        budget.status,
        budget.spec,
        budget="rb",
        generation=1,
        now=late,
        seen={path: Sighting("uid-d", generation=3)},
    )
    assert lost.refunded == 1
    assert budget.status.consumed == 0


def test_what_cannot_be_read_is_kept_as_spent_with_a_warning() -> None:
    budget = trust_budget()
    issue(budget, "hidden")
    outcome = run_trust(budget, START + TTL, {f"{CSR}/hidden": UNREADABLE})
    assert (outcome.confirmed, outcome.unverified) == (0, 1)
    [warning] = [n for n in outcome.notices if n.reason == "ReservationUnverified"]
    assert warning.severity == "warning"
    assert f"could not read {CSR}/hidden" in warning.summary


def test_a_reservation_not_looked_at_in_this_pass_waits_even_when_expired() -> None:
    """Its reservation came after the look (or its path was not asked): no verdict yet, and
    above all no false permissions warning."""
    budget = trust_budget()
    issue(budget, "late")
    outcome = run_trust(budget, START + TTL + TTL, {f"{CSR}/other": None})
    assert (outcome.confirmed, outcome.refunded, outcome.unverified) == (0, 0, 0)
    assert outcome.notices == []
    assert budget.status.accounts["user:alice"].reserved == 1


def test_where_nobody_can_look_a_reservation_is_confirmed_at_expiry() -> None:
    """The embedded ledger has no API server to ask: a witness is kept for the record, and
    the reservation is confirmed when it expires, as one without a witness is."""
    budget = trust_budget()
    issue(budget, "embedded")
    assert not reconcile_trust(
        budget.status,
        budget.spec,
        budget="TrustBudget certs",
        generation=1,
        now=START + TTL - timedelta(seconds=1),
        seen=None,
        samples=UsageSamples(),
    ).confirmed
    outcome = reconcile_trust(
        budget.status,
        budget.spec,
        budget="TrustBudget certs",
        generation=1,
        now=START + TTL,
        seen=None,
        samples=UsageSamples(),
    )
    assert (outcome.confirmed, outcome.unverified, outcome.notices) == (1, 0, [])
    account = budget.status.accounts["user:alice"]
    assert (account.reserved, account.spent) == (0, 1)


def test_an_interval_reset_happens_once_and_is_announced_once() -> None:
    budget = trust_budget()
    issue(budget, "a")
    run_trust(budget, START + timedelta(seconds=1), {f"{CSR}/a": Sighting("uid-a")})
    midnight = datetime(2026, 3, 11, tzinfo=UTC)
    assert next_due(budget.status) == midnight
    outcome = run_trust(budget, midnight)
    assert summaries(outcome) == [
        "1 accounts reset to 100 points; next reset at 2026-03-12T00:00:00Z"
    ]
    assert budget.status.accounts["user:alice"].balance == 100
    again = run_trust(budget, midnight + timedelta(seconds=5))
    assert again.notices == []
    assert not again.changed


def test_nothing_due_means_nothing_to_write() -> None:
    budget = trust_budget()
    run_trust(budget, START)
    assert not run_trust(budget, START + timedelta(minutes=1)).changed


def test_low_balance_then_exhaustion_are_each_announced_once() -> None:
    budget = trust_budget(initialBalance=10, alerts={"rapidDepletion": {"percent": 0}})
    samples = UsageSamples()
    for i in range(8):  # 2 of 10 left: 20% is not less than 20%, so not low yet
        issue(budget, f"c{i}", at=START + timedelta(minutes=i))
    assert summaries(run_trust(budget, START + timedelta(minutes=8), samples=samples)) == []
    issue(budget, "c8", at=START + timedelta(minutes=8))
    low = run_trust(budget, START + timedelta(minutes=9), all_present(budget), samples)
    assert summaries(low) == [
        "user:alice: balance low, 1 / 10 points remain (10.0%); resets at 2026-03-11T00:00:00Z"
    ]
    assert [(n.severity, n.headline) for n in low.notices] == [
        ("warning", "Trust Budget low for user:alice: 10.0% left")
    ]
    assert low.notices[0].details == ("Review how often this account issues before it runs out.",)
    condition = next(c for c in budget.status.conditions if c.type == "LowBalance")
    assert (condition.status, condition.message) == ("True", "1 accounts: user:alice")
    since = condition.last_transition_time
    issue(budget, "c9", at=START + timedelta(minutes=11))
    out = run_trust(budget, START + timedelta(minutes=12), all_present(budget), samples)
    assert [n.reason for n in out.notices] == ["Exhausted"]
    assert out.notices[0].severity == "critical"
    assert out.notices[0].headline == "Trust Budget Exhausted for user:alice"
    assert out.notices[0].details == (
        "Issuance to this account is refused until it resets.",
        "Check whether this was expected; if not, look for credential abuse.",
    )
    condition = next(c for c in budget.status.conditions if c.type == "LowBalance")
    assert condition.last_transition_time == since  # still True: the time stays
    assert budget.status.alerting == {"user:alice": ["Exhausted", "LowBalance"]}
    # A restarted operator (no samples) announces nothing it already announced.
    assert run_trust(budget, START + timedelta(minutes=13), samples=UsageSamples()).notices == []


def test_rapid_depletion_is_caught_and_slow_spending_is_not() -> None:
    fast = trust_budget(initialBalance=100, resetInterval=None)
    slow = trust_budget(initialBalance=100, resetInterval=None)
    for budget, gap in ((fast, timedelta(seconds=30)), (slow, timedelta(minutes=5))):
        samples = UsageSamples()  # one per budget, as the reconciler keeps them
        for i in range(60):
            at = START + gap * i
            issue(budget, f"r{i}", at=at)
            if i % 5 == 4:
                run_trust(budget, at, all_present(budget), samples)
    assert "RapidDepletion" in fast.status.alerting["user:alice"]
    assert "RapidDepletion" not in slow.status.alerting.get("user:alice", [])


def test_a_band_change_is_announced_with_its_numbers_and_what_may_still_ship() -> None:
    budget = risk_budget()
    spec, status = budget.spec, budget.status
    reconcile_risk(status, spec, budget="rb", generation=1, now=START, seen={})
    admit_risk(status, spec, release=Release("v1", 48, "standard"), now=START, ttl=TTL)
    outcome = reconcile_risk(status, spec, budget="rb", generation=1, now=START, seen={})
    [notice] = outcome.notices
    assert notice.summary == "payments-api: Green -> Yellow, 48 / 120 RP (40.0%)"
    assert (notice.severity, notice.headline) == (
        "warning",
        "Risk Budget at 40.0% for payments-api",
    )
    assert notice.details == (
        "Consider pausing non-critical changes until the next budget window.",
        "Still allowed: standard, low-risk, security-fix, incident",
        "Window 2026-03 resets at 2026-04-01T00:00:00Z",
    )
    assert announced_band(status.conditions) == "Yellow"
    assert reconcile_risk(status, spec, budget="rb", generation=1, now=START, seen={}).notices == []


@pytest.mark.parametrize(
    ("points", "bands", "severity", "headline", "advice"),
    [
        (
            90,
            {},
            "critical",
            "Risk Budget at 75.0% for payments-api",
            ("Only low-risk changes, security fixes and incident responses are allowed.",),
        ),
        (
            120,
            {},
            "critical",
            "Risk Budget Exhausted for payments-api",
            (
                "Only security fixes and incident responses are allowed.",
                "Contact the platform team for emergency capacity.",
            ),
        ),
        (
            90,
            {"red": ["incident"]},
            "critical",
            "Risk Budget at 75.0% for payments-api",
            ("Only incident responses are allowed.",),
        ),
        (
            120,
            {"exhausted": []},
            "critical",
            "Risk Budget Exhausted for payments-api",
            ("No change may ship.", "Contact the platform team for emergency capacity."),
        ),
    ],
)
def test_red_and_exhausted_are_critical_and_say_what_this_budget_still_allows(
    points: int, bands: dict[str, Any], severity: str, headline: str, advice: tuple[str, ...]
) -> None:
    """The seed's advice, with the band's own policy spelled out: a budget that freezes
    more in Red says so, never the defaults."""
    budget = risk_budget(bands=bands)
    spec, status = budget.spec, budget.status
    reconcile_risk(status, spec, budget="rb", generation=1, now=START, seen={})
    admit_risk(status, spec, release=Release("v1", points, "standard"), now=START, ttl=TTL)
    [notice] = reconcile_risk(status, spec, budget="rb", generation=1, now=START, seen={}).notices
    assert (notice.severity, notice.headline) == (severity, headline)
    assert notice.details[: len(advice)] == advice
    assert notice.details[len(advice)].startswith("Still allowed: ")


def test_back_to_green_is_news_without_advice() -> None:
    budget = risk_budget()
    confirmed_release(budget, "v1", 90, datetime(2026, 1, 30, tzinfo=UTC))
    back = run_risk(budget, datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)).notices[-1]
    assert (back.reason, back.severity) == ("BandChanged", "info")
    assert back.headline == "Risk Budget at 0.0% for payments-api"
    assert back.details[0] == "Still allowed: standard, low-risk, security-fix, incident"


def run_risk(budget: RiskBudget, now: datetime) -> Outcome:
    return reconcile_risk(budget.status, budget.spec, budget="rb", generation=1, now=now, seen={})


def confirmed_release(budget: RiskBudget, key: str, points: int, at: datetime) -> None:
    admit_risk(
        budget.status, budget.spec, release=Release(key, points, "standard"), now=at, ttl=TTL
    )
    reconcile_risk(budget.status, budget.spec, budget="rb", generation=1, now=at + TTL, seen={})


def test_month_end_closes_the_window_once_even_when_two_were_missed() -> None:
    budget = risk_budget()
    confirmed_release(budget, "v1", 90, datetime(2026, 1, 30, tzinfo=UTC))
    assert announced_band(budget.status.conditions) == "Red"
    outcome = run_risk(budget, datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC))
    assert summaries(outcome) == [
        "payments-api: window 2026-01 closed at 90 / 120 RP (75.0%), reached Red",
        "payments-api: window 2026-02 closed at 0 / 120 RP (0.0%), reached Green",
        "payments-api: window 2026-03 closed at 0 / 120 RP (0.0%), reached Green",
        "payments-api: Red -> Green, 0 / 120 RP (0.0%)",
    ]
    assert outcome.notices[2].details == (
        "Window 2026-04 opens with 120 RP; resets at 2026-05-01T00:00:00Z",
    )
    assert not run_risk(budget, datetime(2026, 4, 1, 0, 0, 2, tzinfo=UTC)).changed


def test_a_sprint_ending_on_leap_day_rolls_at_its_anchor() -> None:
    sprint: dict[str, Any] = {
        "cadence": "sprint",
        "sprint": {"lengthDays": 14, "anchor": "2028-02-01"},
    }
    budget = risk_budget(window=sprint)
    confirmed_release(budget, "v1", 10, datetime(2028, 2, 20, tzinfo=UTC))
    assert budget.status.window is not None
    assert budget.status.window.end == datetime(2028, 2, 29, tzinfo=UTC)
    assert run_risk(budget, datetime(2028, 2, 28, 23, 59, 59, tzinfo=UTC)).notices == []
    outcome = run_risk(budget, datetime(2028, 2, 29, tzinfo=UTC))
    assert summaries(outcome)[0].startswith(
        "payments-api: window sprint-2028-02-15 closed at 10 / 120"
    )
    assert budget.status.history[-1].consumed == 10
    assert budget.status.consumed == 0
    assert audit(budget.status) == []


def test_money_stays_exact_in_refunds() -> None:
    # Three charges of 0.10 leave 0.7000000000000001 in floating point; cents stay cents.
    budget = trust_budget(unit="USD", cost="0.10", initialBalance="1.00")
    for name in ("m1", "m2", "m3"):
        issue(budget, name)
    assert budget.status.accounts["user:alice"].balance == Decimal("0.70")
    run_trust(budget, START + TTL, {f"{CSR}/{name}": None for name in ("m1", "m2", "m3")})
    assert budget.status.accounts["user:alice"].balance == Decimal("1.00")
