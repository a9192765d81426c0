"""What a request is charged when several budgets govern it, when one vanishes, and when its
strings or numbers could not be stored: all or nothing, calmly, and the ledger stays
readable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from budgetops.admission.webhook import Admission
from budgetops.apis.resources import Budget, BudgetKey, Kind, RiskBudget, TrustBudget
from budgetops.store import BudgetStore
from budgetops.store.sqlite import SQLiteStore
from tests.memstore import MemStore

from .test_admission import admitting, deployment, request
from .test_decisions import risk_budget, trust_budget

PER_USER = BudgetKey("TrustBudget", "per-user")
PER_TEAM = BudgetKey("TrustBudget", "per-team")


def named(budget: TrustBudget, name: str) -> TrustBudget:
    budget.metadata.name = name
    return budget


def per_team(**spec: Any) -> TrustBudget:
    team = {"subjects": {"groups": ["developers"]}, "accountKey": "group:${group}"}
    return named(trust_budget(**(team | spec)), "per-team")


@pytest.fixture
def two_budgets(tmp_path: Path) -> SQLiteStore:
    """One request, two TrustBudgets: alice's own (5) and her team's (2)."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(named(trust_budget(initialBalance=5), "per-user"))
    store.apply(per_team(initialBalance=2))
    return store


def review(admission: Admission, body: dict[str, Any]) -> dict[str, Any]:
    answer = asyncio.run(admission.review(json.dumps(body).encode()))
    assert answer.status == 200, answer.body
    result: dict[str, Any] = answer.body["response"]
    return result


def account(store: BudgetStore, key: BudgetKey, name: str) -> Any:
    budget = store.get(key)
    assert isinstance(budget, TrustBudget)
    return budget.status.accounts[name]


def test_a_request_one_budget_refuses_is_charged_nowhere(two_budgets: SQLiteStore) -> None:
    """Before, the per-user budget kept the reservation of a request the team budget denied."""
    admission = admitting(two_budgets)
    allowed = [review(admission, request(uid=f"u{n}"))["allowed"] for n in range(4)]
    assert allowed == [True, True, False, False]
    mine = account(two_budgets, PER_USER, "user:alice")
    assert (mine.balance, mine.reserved) == (3, 2)
    team = account(two_budgets, PER_TEAM, "group:developers")
    assert (team.balance, team.reserved) == (0, 2)


def test_a_taken_back_key_is_charged_again_when_asked_again(two_budgets: SQLiteStore) -> None:
    """Taking back is not a refund: the key is not remembered, so the refused request asked
    again later is a new charge, not a free replay."""
    admission = admitting(two_budgets)
    for n in range(2):
        review(admission, request(uid=f"u{n}"))
    assert not review(admission, request(uid="again"))["allowed"]
    two_budgets.apply(per_team(initialBalance=3))
    answer = review(admission, request(uid="again"))
    assert answer["allowed"]
    assert not any("already charged" in w for w in answer["warnings"])
    assert account(two_budgets, PER_USER, "user:alice").reserved == 3


def token_request() -> dict[str, Any]:
    body = request(
        user="system:serviceaccount:ci:builder",
        groups=("developers",),
        resource={"group": "", "version": "v1", "resource": "serviceaccounts"},
        kind="TokenRequest",
        namespace="ci",
        obj={"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
    )
    body["request"]["subResource"] = "token"
    return body


def test_a_token_request_settles_in_every_budget_only_once_all_admitted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    tokens = [{"resource": "serviceaccounts", "subresource": "token"}]
    store.apply(named(trust_budget(match=tokens, initialBalance=5), "per-user"))
    store.apply(per_team(match=tokens, initialBalance=1))
    admission = admitting(store)
    assert review(admission, token_request())["allowed"]
    user = "user:system:serviceaccount:ci:builder"
    for key, name in ((PER_USER, user), (PER_TEAM, "group:developers")):
        held = account(store, key, name)
        assert (held.spent, held.reserved) == (1, 0)
    second = token_request()
    second["request"]["uid"] = "req-2"
    assert not review(admission, second)["allowed"]
    held = account(store, PER_USER, user)
    assert (held.spent, held.reserved, held.balance) == (1, 0, 4)


class Vanishing(MemStore):
    """A budget deleted after the request was classified and before it was charged: its
    `list` (public) deletes `gone` once it has answered."""

    gone: BudgetKey | None = None

    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]:
        listed = super().list(kind, with_status=with_status)
        if self.gone is not None:
            self.delete(self.gone)
        return listed


def test_a_budget_deleted_before_its_charge_is_a_calm_answer() -> None:
    store = Vanishing()
    store.apply(named(trust_budget(initialBalance=5), "per-user"))
    store.apply(per_team(initialBalance=2))
    store.gone = PER_TEAM
    answer = review(admitting(store), request())
    assert answer["allowed"]
    assert "TrustBudget/per-team was deleted while this request was decided" in " ".join(
        answer["warnings"]
    )
    assert account(store, PER_USER, "user:alice").reserved == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            request(user="u" * 300),
            "BudgetOps cannot charge this request to TrustBudget/per-user: the account is 305 "
            "characters long; at most 253 fit.",
        ),
        (
            request(uid="k" * 300),
            "BudgetOps cannot charge this request to TrustBudget/per-user: the idempotency key "
            "is 300 characters long",
        ),
    ],
)
def test_strings_the_ledger_could_not_store_are_a_calm_refusal(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    """Before, they were written and then made the budget unreadable: every later review of
    it was a 500 and /readyz failed."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(named(trust_budget(initialBalance=5), "per-user"))
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    answer = review(admitting(store), body)
    assert not answer["allowed"]
    assert answer["status"]["code"] == 400
    assert answer["status"]["message"].startswith(message)
    assert store.ready()
    assert review(admitting(store), request(uid="fine"))["allowed"]


def test_a_release_id_too_long_to_store_is_refused_through_the_webhook(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    shipped = request(
        resource={"group": "apps", "version": "v1", "resource": "deployments"},
        kind="Deployment",
        namespace="payments",
        obj=deployment(**{"budgetops.dev/release-id": "r" * 300}),
    )
    answer = review(admitting(store), shipped)
    assert not answer["allowed"]
    assert "idempotency key is 308 characters long" in answer["status"]["message"]
    budget = store.get(BudgetKey("RiskBudget", "payments-api", "payments"))
    assert isinstance(budget, RiskBudget)
    assert budget.status.consumed == 0
    assert store.ready()


class FailingSettle(MemStore):
    """The team budget (charged first, by name) cannot be written a second time: its settle
    fails, in `update_status_async` (public)."""

    writes: dict[BudgetKey, int]

    async def update_status_async(self, key: BudgetKey, change: Any, **kwargs: Any) -> Any:
        self.writes[key] = self.writes.get(key, 0) + 1
        if key == PER_TEAM and self.writes[key] == 2:
            raise OSError("disk I/O error")
        return await super().update_status_async(key, change, **kwargs)


def test_a_settle_that_fails_after_all_admitted_keeps_the_request_admitted() -> None:
    """Before, the failed settle became a 500 while the team budget stayed spent: a request
    refused (or, with failurePolicy Ignore, let through) and charged all the same."""
    store = FailingSettle()
    store.writes = {}
    tokens = [{"resource": "serviceaccounts", "subresource": "token"}]
    store.apply(named(trust_budget(match=tokens, initialBalance=5), "per-user"))
    store.apply(per_team(match=tokens, initialBalance=1))
    assert review(admitting(store), token_request())["allowed"]
    mine = account(store, PER_USER, "user:system:serviceaccount:ci:builder")
    assert (mine.spent, mine.reserved) == (1, 0)
    team = account(store, PER_TEAM, "group:developers")
    assert (team.spent, team.reserved) == (0, 1)  # confirmed by the reconciler at expiry
    assert team.reservations[token_request()["request"]["uid"]].witness is None
