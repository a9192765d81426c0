"""A budget's `failMode`: when its store does not answer in time, a failOpen budget admits the
request uncharged and settles the charge later, once; a failClosed one refuses, as before, and
the request is all or nothing across budgets either way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from budgetops.admission.server import serve
from budgetops.admission.webhook import RETRY_MESSAGE, Admission
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.decisions import Decision
from budgetops.store import BudgetStore, ChargeTimeout
from budgetops.store.sqlite import SQLiteStore

from .test_admission import admitting, deployment, post, request
from .test_admission_charges import PER_TEAM, PER_USER, account, named, per_team, review
from .test_decisions import risk_budget, trust_budget

RISK = BudgetKey("RiskBudget", "payments-api", "payments")
RESOURCE = {"group": "apps", "version": "v1", "resource": "deployments"}


class Unanswering:
    """A real store whose named budgets do not answer: each charge to one of them is a
    ChargeTimeout (the store's answer to a deadline or an API server that does not answer).
    `landed`: the write happens first and only the answer is lost."""

    def __init__(self, store: BudgetStore, *down: BudgetKey, landed: bool = False) -> None:
        self.store = store
        self.down = set(down)
        self.landed = landed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update_status_async(
        self, key: BudgetKey, change: Callable[[Budget], Decision], **options: Any
    ) -> Decision:
        if key in self.down:
            if self.landed:
                await self.store.update_status_async(key, change, **options)
            raise ChargeTimeout(f"{key}: the API server did not answer")
        return cast(Decision, await self.store.update_status_async(key, change, **options))


def with_fail_modes(tmp_path: Path, user: str, team: str, *, balance: int = 5) -> SQLiteStore:
    """alice's own budget and her team's, with the fail modes given."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(named(trust_budget(initialBalance=balance, failMode=user), "per-user"))
    store.apply(per_team(initialBalance=balance, failMode=team))
    return store


def admission_over(store: BudgetStore, *down: BudgetKey, landed: bool = False) -> Admission:
    return admitting(cast(BudgetStore, Unanswering(store, *down, landed=landed)))


def sample(admission: Admission, name: str, **labels: str) -> float:
    return admission.metrics.registry.get_sample_value(name, labels) or 0.0


def settle(admission: Admission) -> bool:
    return asyncio.run(admission.charging.settle_owed())


def test_fail_closed_is_the_default() -> None:
    assert trust_budget().spec.fail_mode == "failClosed"
    assert risk_budget().spec.fail_mode == "failClosed"


def test_a_fail_open_budget_admits_uncharged_and_the_others_still_charge(tmp_path: Path) -> None:
    store = with_fail_modes(tmp_path, "failOpen", "failClosed")
    admission = admission_over(store, PER_USER)
    answer = review(admission, request(uid="u1"))
    assert answer["allowed"] is True
    assert (
        "TrustBudget/per-user could not be reached in time and is set to failOpen: this request "
        "was admitted without being charged to it; the charge is retried once the budget answers"
    ) in answer["warnings"]
    assert account(store, PER_TEAM, "group:developers").reserved == 1
    assert "user:alice" not in cast(TrustBudget, store.get(PER_USER)).status.accounts
    failed = "budgetops_admissions_failed_open_total"
    assert sample(admission, failed, kind="TrustBudget", budget="per-user") == 1
    assert sample(admission, failed, kind="TrustBudget", budget="per-team") == 0
    reasons = "budgetops_admissions_total"
    assert sample(admission, reasons, kind="TrustBudget", decision="allowed", reason="FailedOpen")
    assert len(admission.charging.owed) == 1


def test_a_fail_closed_budget_that_times_out_refuses_and_nothing_is_kept(tmp_path: Path) -> None:
    """All or nothing: the failOpen budget passed, the failClosed one did not answer, so the
    request is refused as before, the reservation the team budget took is taken back, and
    nothing is owed (a retry must never charge a refused request)."""
    store = with_fail_modes(tmp_path, "failClosed", "failOpen")
    admission = admission_over(store, PER_TEAM, PER_USER)
    answer = review(admission, request(uid="u1"))
    assert answer["allowed"] is False
    assert (answer["status"]["message"], answer["status"]["code"]) == (RETRY_MESSAGE, 503)
    assert sample(
        admission, "budgetops_admissions_failed_open_total", kind="TrustBudget", budget="per-team"
    ), "the failOpen budget was asked first and failed open"
    assert list(admission.charging.owed) == []

    admission = admission_over(store, PER_USER)  # the team budget answers and reserves
    assert review(admission, request(uid="u2"))["allowed"] is False
    assert account(store, PER_TEAM, "group:developers").reserved == 0


def test_the_owed_charge_is_settled_once_when_the_store_answers(tmp_path: Path) -> None:
    """The write landed but its answer was lost: the retry finds the key charged and charges
    nothing more; retrying again finds nothing owed."""
    store = with_fail_modes(tmp_path, "failOpen", "failOpen")
    admission = admission_over(store, PER_USER, landed=True)
    assert review(admission, request(uid="u1"))["allowed"] is True
    unanswering = cast(Unanswering, admission.store)
    assert settle(admission) is False, "the store still does not answer: the charge stays owed"
    assert len(admission.charging.owed) == 1
    unanswering.down.clear()
    assert settle(admission) is True
    assert settle(admission) is True
    assert account(store, PER_USER, "user:alice").reserved == 1
    assert account(store, PER_TEAM, "group:developers").reserved == 1
    settled = "budgetops_failed_open_settlements_total"
    assert sample(admission, settled, kind="TrustBudget", budget="per-user", outcome="settled") == 1


def test_a_settlement_the_balance_refuses_is_counted_never_undone(tmp_path: Path) -> None:
    store = with_fail_modes(tmp_path, "failOpen", "failClosed", balance=1)
    store.apply(per_team(initialBalance=5))
    admission = admission_over(store, PER_USER)
    assert [review(admission, request(uid=f"u{n}"))["allowed"] for n in range(2)] == [True, True]
    cast(Unanswering, admission.store).down.clear()
    assert settle(admission) is True
    mine = account(store, PER_USER, "user:alice")
    assert (mine.balance, mine.reserved) == (0, 1)
    settled = "budgetops_failed_open_settlements_total"
    for outcome in ("settled", "refused"):
        labels = {"kind": "TrustBudget", "budget": "per-user", "outcome": outcome}
        assert sample(admission, settled, **labels) == 1
    assert account(store, PER_TEAM, "group:developers").reserved == 2


def test_the_background_retry_settles_what_is_owed(tmp_path: Path) -> None:
    store = with_fail_modes(tmp_path, "failOpen", "failClosed")
    admission = admission_over(store, PER_USER)
    admission.charging.retry_after = 0.0

    async def admit_then_answer() -> None:
        answer = await admission.review(json.dumps(request(uid="u1")).encode())
        assert answer.body["response"]["allowed"] is True
        cast(Unanswering, admission.store).down.clear()  # before the retry's first turn
        assert admission.charging.retrying is not None
        await admission.charging.retrying

    asyncio.run(admit_then_answer())
    assert list(admission.charging.owed) == []
    assert account(store, PER_USER, "user:alice").reserved == 1


def test_a_dry_run_fails_open_without_owing(tmp_path: Path) -> None:
    store = with_fail_modes(tmp_path, "failOpen", "failClosed")
    admission = admission_over(store, PER_USER)
    answer = review(admission, request(uid="u1", dry_run=True))
    assert answer["allowed"] is True
    assert any("without being charged" in w for w in answer["warnings"])
    assert list(admission.charging.owed) == []


@pytest.mark.parametrize(("mode", "allowed"), [("failOpen", True), ("failClosed", False)])
def test_a_risk_budget_fails_as_it_is_set_over_http(
    tmp_path: Path, mode: str, allowed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the webhook's HTTP server: a RiskBudget's release step follows its failMode;
    a server that stops with a charge still owed says so."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}, failMode=mode))
    admission = admission_over(store, RISK)
    admission.charging.retry_after = 3600.0  # settling is tested above, not over HTTP
    server = serve(admission, host="127.0.0.1", port=0, tls=None)
    try:
        body = request(resource=RESOURCE, kind="Deployment", namespace="payments")
        body["request"]["object"] = deployment()
        status, reply = post(("127.0.0.1", server.port, store), json.dumps(body).encode())
    finally:
        server.close()
    assert status == 200
    assert reply["response"]["allowed"] is allowed
    failed = sample(
        admission,
        "budgetops_admissions_failed_open_total",
        kind="RiskBudget",
        budget="payments/payments-api",
    )
    assert failed == (1 if allowed else 0)
    if allowed:
        assert any("RiskBudget/payments/payments-api" in w for w in reply["response"]["warnings"])
        assert "stopping with 1 failed-open charges unsettled" in caplog.text
        assert admission.charging.retrying is not None
        assert admission.charging.retrying.done()
    else:
        assert reply["response"]["status"]["code"] == 503
