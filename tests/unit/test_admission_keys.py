"""What a replay is, how long a key is remembered, and who is charged, through the webhook.

A replay is the same object's same change: another object or another pod template under a
release id already charged is refused, never free. Idempotency memory never refuses work a
balance allows, whatever other accounts did. An account never moves back in time. A user in
several governed groups is charged in each, all or nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from budgetops.admission.classify import Identity, account_keys, classify
from budgetops.admission.webhook import Admission
from budgetops.apis.ledger import KEY_KEPT
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine.decisions import Release, admit_risk
from budgetops.engine.ledger import audit, confirm, refund
from budgetops.engine.rollover import summarize_risk
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging

from .test_admission import NOW, parsed, request
from .test_admission_charges import account, review
from .test_decisions import charge, risk_budget, trust_budget

RELEASE_ID = "budgetops.dev/release-id"
POINTS = "budgetops.dev/risk-points"
DEPLOYMENTS = {"group": "apps", "version": "v1", "resource": "deployments"}
SERVICE = BudgetKey("RiskBudget", "payments-api", "payments")
CERTS = BudgetKey("TrustBudget", "certs")


def admitting(store: SQLiteStore, now: datetime = NOW) -> Admission:
    return Admission(store, clock=lambda: now, identity=Identity(), ttl=timedelta(minutes=5))


def workload(
    name: str = "api", uid: str = "dep-1", image: str = "app:1", **annotations: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "payments",
            "uid": uid,
            "labels": {"app": "api"},
            "annotations": annotations,
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}},
    }


def ship(
    obj: dict[str, Any], *, old: dict[str, Any] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    return request(
        kind="Deployment",
        resource=DEPLOYMENTS,
        namespace="payments",
        operation="UPDATE" if old else "CREATE",
        obj=obj,
        old=old,
        uid=obj["metadata"]["uid"],
        dry_run=dry_run,
    )


def consumed(store: SQLiteStore) -> int:
    budget = store.get(SERVICE)
    assert isinstance(budget, RiskBudget)
    assert audit(budget.status) == []
    return budget.status.consumed


@pytest.fixture
def releases(tmp_path: Path) -> SQLiteStore:
    """A tier-2 service (120 RP a month) that shipped release v1 of `api` for 90 RP: Red."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    first = review(admitting(store), ship(workload(**{RELEASE_ID: "v1", POINTS: "90"})))
    assert first["allowed"]
    assert consumed(store) == 90
    return store


def test_a_new_deployment_copying_a_charged_release_id_is_refused_not_free(
    releases: SQLiteStore,
) -> None:
    """Before, it was taken for a replay and admitted free, in Red with 99,999 RP declared."""
    copy = workload(name="copy", uid="dep-2", **{RELEASE_ID: "v1", POINTS: "99999"})
    answer = review(admitting(releases), ship(copy))
    assert not answer["allowed"]
    message = answer["status"]["message"]
    assert message.startswith(
        "RiskBudget/payments/payments-api: Release id v1 was already charged to risk budget "
        "payments-api in this window, for Deployment payments/api, pod template "
    )
    assert "; this is Deployment payments/copy, pod template " in message
    assert message.endswith("give this one a new budgetops.dev/release-id.")
    assert consumed(releases) == 90
    dry = review(admitting(releases), ship(copy, dry_run=True))
    assert not dry["allowed"], "a dry run is decided as the request would be"


def test_a_new_template_under_a_used_release_id_is_refused(releases: SQLiteStore) -> None:
    old = workload(**{RELEASE_ID: "v1", POINTS: "90"})
    changed = workload(image="app:2", **{RELEASE_ID: "v1", POINTS: "1"})
    answer = review(admitting(releases), ship(changed, old=old))
    assert not answer["allowed"]
    assert "this is Deployment payments/api, pod template " in answer["status"]["message"]
    assert consumed(releases) == 90


def test_the_same_object_and_template_replays_its_release_for_free(
    releases: SQLiteStore,
) -> None:
    again = review(admitting(releases), ship(workload(**{RELEASE_ID: "v1", POINTS: "90"})))
    assert again["allowed"]
    assert "release release:v1 was already charged" in again["warnings"][0]
    later = admitting(releases, NOW + timedelta(days=3))
    recreated = workload(uid="dep-9", **{RELEASE_ID: "v1", POINTS: "90"})
    assert review(later, ship(recreated))["allowed"], "deleted and created again, unchanged"
    assert consumed(releases) == 90


def test_a_release_id_is_remembered_for_its_window_only(releases: SQLiteStore) -> None:
    releases.update_status(SERVICE, lambda b: confirm(b.status, key="release:v1", now=NOW))
    next_month = admitting(releases, datetime(2026, 2, 1, 1, tzinfo=UTC))
    copy = workload(name="copy", uid="dep-2", **{RELEASE_ID: "v1", POINTS: "5"})
    assert review(next_month, ship(copy))["allowed"]
    assert consumed(releases) == 5


def test_a_warn_budget_only_warns_of_a_reused_release_id_and_charges_nothing(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}, enforcement="warn"))
    admission = admitting(store)
    assert review(admission, ship(workload(**{RELEASE_ID: "v1", POINTS: "30"})))["allowed"]
    copy = workload(name="copy", uid="dep-2", **{RELEASE_ID: "v1", POINTS: "30"})
    answer = review(admission, ship(copy))
    assert answer["allowed"]
    assert answer["warnings"][0].endswith("(warn only; not charged)")
    assert consumed(store) == 30


def test_a_refunded_release_is_charged_again_not_replayed_free(releases: SQLiteStore) -> None:
    """Its object never appeared, so the release never shipped: asking again is a charge."""

    def never_appeared(budget: Budget) -> None:
        assert isinstance(budget, RiskBudget)
        refund(budget.status, key="release:v1", now=NOW)
        summarize_risk(budget.status, budget.spec)

    releases.update_status(SERVICE, never_appeared)
    assert consumed(releases) == 0
    again = review(admitting(releases), ship(workload(**{RELEASE_ID: "v1", POINTS: "90"})))
    assert again["allowed"]
    assert "already charged" not in again["warnings"][0]
    assert consumed(releases) == 90


def test_a_release_declared_without_an_object_replays_itself() -> None:
    budget = risk_budget()
    release = Release(key="v7", points=10, change_class="standard", ref="cli")
    first = admit_risk(budget.status, budget.spec, release=release, now=NOW, ttl=KEY_KEPT)
    again = admit_risk(budget.status, budget.spec, release=release, now=NOW, ttl=KEY_KEPT)
    assert (first.reason, again.reason) == ("Charged", "AlreadyCharged")
    later = admit_risk(
        budget.status, budget.spec, release=release, now=NOW + timedelta(days=5), ttl=KEY_KEPT
    )
    assert later.reason == "AlreadyCharged", "a release id is kept for its window, not minutes"


# Idempotency memory never refuses what a balance allows.


def forty_one_users_charged(store: SQLiteStore, **spec: Any) -> None:
    """41 users charged 100 times each in one window: 4,100 settled keys."""
    store.apply(trust_budget(initialBalance=1000, **spec))

    def charge_all(budget: Budget) -> None:
        for user in range(41):
            for n in range(100):
                charging(f"u{user}-{n}", account=f"user:u{user}", now=NOW)(budget)
                confirm(budget.status, key=f"u{user}-{n}", now=NOW)

    store.update_status(CERTS, charge_all)


@pytest.mark.parametrize(
    "spec",
    [{}, {"enforcement": "warn"}, {"resetInterval": None}],
    ids=["enforce", "warn", "no-reset-interval"],
)
def test_forty_one_users_history_never_refuses_a_forty_second(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    """Before, the 4,096-key cap counted every account together: a new user with a full
    balance was refused, a warn budget refused everything (dry runs too), and a budget
    without a reset interval was refused for good."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    forty_one_users_charged(store, **spec)
    admission = admitting(store)
    dry = review(admission, request(user="newcomer", uid="n0", dry_run=True))
    assert dry["allowed"], dry
    answer = review(admission, request(user="newcomer", uid="n1"))
    assert answer["allowed"], answer
    assert "remaining 999 of 1000" in answer["warnings"][0]
    assert review(admission, request(user="u0", uid="u0-99"))["allowed"], "a replay"
    assert account(store, CERTS, "user:u0").spent == 100, "charged once"


def test_a_uid_is_remembered_while_the_api_server_may_send_it_again() -> None:
    budget = trust_budget()
    charge(budget, "uid-1")
    confirm(budget.status, key="uid-1", now=NOW)
    assert charge(budget, "uid-1", now=NOW + KEY_KEPT).reason == "AlreadyCharged"
    long_after = NOW + 3 * KEY_KEPT
    assert charge(budget, "uid-2", now=long_after).reason == "Charged"
    assert "uid-1" not in budget.status.settled, "let go once no retry can come"


# An account never moves back in time.


def test_a_charge_stamped_before_its_window_counts_in_the_current_one() -> None:
    """Before, the receipt said charged and the balance never moved: the confirmation
    took the charge for one of a closed window and gave it back."""
    budget = trust_budget()
    after = datetime(2026, 1, 2, 0, 1, tzinfo=UTC)
    charge(budget, "a", now=after)
    confirm(budget.status, key="a", now=after)
    back = datetime(2026, 1, 1, 23, 59, tzinfo=UTC)
    decision = charge(budget, "b", now=back)
    assert decision.reason == "Charged"
    confirm(budget.status, key="b", now=back)
    alice = budget.status.accounts["user:alice"]
    assert (alice.spent, alice.balance) == (2, 98)
    assert alice.window_start == datetime(2026, 1, 2, tzinfo=UTC)
    assert audit(budget.status) == []


def test_a_key_settled_before_a_reset_is_not_charged_again_by_a_clock_gone_back() -> None:
    budget = trust_budget()
    reset = datetime(2026, 1, 2, tzinfo=UTC)
    before = reset - timedelta(seconds=30)
    charge(budget, "old", now=before)
    confirm(budget.status, key="old", now=before)
    charge(budget, "new", now=reset + timedelta(seconds=30))
    replay = charge(budget, "old", now=reset - timedelta(seconds=15))
    assert (replay.reason, replay.cost) == ("AlreadyCharged", 0)


def test_a_release_stamped_before_its_window_counts_in_the_current_one() -> None:
    budget = risk_budget()
    feb = datetime(2026, 2, 1, 0, 1, tzinfo=UTC)
    first = Release(key="r1", points=10, change_class="standard")
    admit_risk(budget.status, budget.spec, release=first, now=feb, ttl=KEY_KEPT)
    back = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    second = Release(key="r2", points=10, change_class="standard")
    admit_risk(budget.status, budget.spec, release=second, now=back, ttl=KEY_KEPT)
    for key in ("r1", "r2"):
        confirm(budget.status, key=key, now=back)
    service = budget.status.accounts["payments-api"]
    assert (service.spent, service.balance) == (20, 100)


# Every governed group pays.


def two_groups(**spec: Any) -> TrustBudget:
    team = {"subjects": {"groups": ["developers", "ops"]}, "accountKey": "group:${group}"}
    return trust_budget(**(team | spec))


def test_every_governed_group_is_an_account_to_charge() -> None:
    spec = two_groups().spec
    both = parsed(groups=("ops", "system:authenticated", "developers", "ops"))
    assert account_keys(spec, both) == ["group:ops", "group:developers"]
    [only] = classify([two_groups()], parsed(groups=("developers",)), Identity()).trust
    assert (only.account, only.key) == ("group:developers", "uid-1")
    keys = [c.key for c in classify([two_groups()], both, Identity()).trust]
    assert len(set(keys)) == 2, "each account is keyed apart"


def test_a_user_in_two_governed_groups_is_charged_in_each_all_or_nothing(
    tmp_path: Path,
) -> None:
    """Before, only the first governed group was charged: membership in a second group
    escaped its limit."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(two_groups(initialBalance=2))
    admission = admitting(store)
    alice = ("developers", "ops")
    assert review(admission, request(groups=alice, uid="a1"))["allowed"]
    assert account(store, CERTS, "group:developers").reserved == 1
    assert account(store, CERTS, "group:ops").reserved == 1
    assert review(admission, request(user="bob", groups=("ops",), uid="b1"))["allowed"]
    denied = review(admission, request(groups=alice, uid="a2"))
    assert not denied["allowed"], "ops is exhausted, so alice's request is refused"
    assert denied["status"]["message"].startswith("TrustBudget/certs: Trust budget exhausted.")
    assert account(store, CERTS, "group:developers").reserved == 1, "taken back"
    replay = review(admission, request(groups=alice, uid="a1"))
    assert replay["allowed"], "a retry of the admitted request is free in both accounts"
    assert account(store, CERTS, "group:ops").reserved == 2


def test_keys_read_back_in_name_order_are_still_let_go_by_age() -> None:
    """The API server hands an object's keys back sorted by name, not in the order they
    settled: a young key named first held every old one back, and memory grew unbounded."""
    young = NOW - timedelta(seconds=10)
    old = NOW - 3 * KEY_KEPT
    settled = {"0000-young": young} | {f"uid-{n:05d}": old for n in range(3000)}
    budget = trust_budget()
    wire = budget.to_wire()
    wire["status"]["settled"] = {k: v.isoformat() for k, v in sorted(settled.items())}
    read = TrustBudget.model_validate(wire)
    read.status.forget_settled(NOW)
    assert list(read.status.settled) == ["0000-young"]


def test_free_releases_leave_no_memory_so_marks_stay_within_the_allocation() -> None:
    """A release of 0 RP costs nothing to repeat; remembering each for the window let
    release ids grow the status without bound."""
    budget = risk_budget()
    for n in range(500):
        release = Release(key=f"free-{n}", points=0, change_class="standard", of=f"api@{n}")
        decision = admit_risk(budget.status, budget.spec, release=release, now=NOW, ttl=KEY_KEPT)
        assert decision.allowed
        confirm(budget.status, key=f"free-{n}", now=NOW)
    assert budget.status.releases == {}
    paid = Release(key="free-7", points=5, change_class="standard", of="other@1")
    charged = admit_risk(budget.status, budget.spec, release=paid, now=NOW, ttl=KEY_KEPT)
    assert (charged.reason, charged.cost) == ("Charged", 5), "a new charge, never free"


def test_a_dry_run_forgets_no_key() -> None:
    budget = trust_budget()
    charge(budget, "uid-1", now=NOW)
    confirm(budget.status, key="uid-1", now=NOW)
    charge(budget, "uid-2", now=NOW + 3 * KEY_KEPT, dry_run=True)
    assert "uid-1" in budget.status.settled
