"""BudgetLease objects follow the ledger's leases: new and closed ones at once, spending at
most every few seconds, forgotten ones deleted, failures tried again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from budgetops.apis.resources import TrustBudget
from budgetops.engine import leaserecords, leases, ledger
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.leases import Usage
from budgetops.engine.reconcile import next_due, reconcile_trust
from budgetops.reconciling.leases import LeaseMirror
from tests.unit.test_decisions import trust_budget

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
AGENT = "agent_abc123"


class Objects:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.failing = False

    def create(self, body: dict[str, Any]) -> bool:
        self._maybe_fail()
        self.calls.append(("create", body["metadata"]["name"], body["spec"]))
        return True

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._maybe_fail()
        self.calls.append(("status", name, status))

    def delete(self, namespace: str, name: str) -> None:
        self._maybe_fail()
        self.calls.append(("delete", name, None))

    def _maybe_fail(self) -> None:
        if self.failing:
            raise OSError("the API server is away")


class Clock:
    now = T0

    def __call__(self) -> datetime:
        return self.now


def budget_with_lease() -> TrustBudget:
    budget = trust_budget(unit="USD", initialBalance="100.00")
    ledger.open_account(
        budget.status, key=AGENT, allocation=Decimal(100), window_start=T0, resets_at=None
    )
    leases.grant(
        budget.status, account=AGENT, lease_id="lease_1", requested=Decimal(10), now=T0,
        ttl=timedelta(hours=1), holder="gateway-1",
    )  # fmt: skip
    return budget


def test_the_mirror_writes_what_changed_and_holds_back_spending_for_a_while() -> None:
    objects, clock = Objects(), Clock()
    mirror = LeaseMirror(objects, namespace="ops", clock=clock)
    budget = budget_with_lease()
    mirror.sync(budget)
    assert [c[0] for c in objects.calls] == ["create", "status"]
    assert objects.calls[0][2]["budgetRef"] == {
        "kind": "TrustBudget", "name": "certs", "account": AGENT,
    }  # fmt: skip
    assert objects.calls[1][2]["phase"] == "Active"
    objects.calls.clear()
    mirror.sync(budget)
    assert objects.calls == []
    leases.report(
        budget.status, account=AGENT, lease_id="lease_1", usages=[Usage("r", 1, Decimal(2))],
        now=T0,
    )  # fmt: skip
    mirror.sync(budget)
    assert objects.calls == []
    assert mirror.due(budget) == timedelta(seconds=5)
    clock.now += timedelta(seconds=5)
    mirror.sync(budget)
    assert objects.calls == [("status", "lease-1", objects.calls[0][2])]
    assert objects.calls[0][2]["spent"] == "2"
    assert mirror.due(budget) is None
    objects.calls.clear()
    leases.close(budget.status, account=AGENT, lease_id="lease_1", now=T0, state="released")
    mirror.sync(budget)
    assert objects.calls[0][2]["phase"] == "Released"


def test_failed_writes_are_tried_again_and_forgotten_leases_deleted() -> None:
    objects, clock = Objects(), Clock()
    mirror = LeaseMirror(objects, namespace="ops", clock=clock)
    budget = budget_with_lease()
    objects.failing = True
    mirror.sync(budget)
    assert mirror.due(budget) == timedelta(seconds=5)
    objects.failing = False
    mirror.sync(budget)
    assert [c[0] for c in objects.calls] == ["create", "status"]
    del budget.status.accounts[AGENT].leases["lease_1"]
    objects.failing = True
    mirror.sync(budget)
    objects.failing = False
    mirror.sync(budget)
    assert objects.calls[-1] == ("delete", "lease-1", None)


def test_the_reconciler_pass_expires_leases_at_their_due_time() -> None:
    budget = budget_with_lease()
    assert next_due(budget.status) == T0 + timedelta(hours=1)
    outcome = reconcile_trust(
        budget.status, budget.spec, budget="TrustBudget certs", generation=1,
        now=T0 + timedelta(hours=1), seen=None, samples=UsageSamples(),
    )  # fmt: skip
    assert outcome.changed
    notice = next(n for n in outcome.notices if n.reason == "LeasesExpired")
    assert notice.summary == f"1 leases expired; 10.00 USD returned to {AGENT}"
    account = budget.status.accounts[AGENT]
    assert (account.balance, account.leased_out) == (100, 0)
    assert next_due(budget.status) == T0 + timedelta(hours=2)  # when it is forgotten


def test_reported_requests_counts_unnumbered_reports_too() -> None:
    budget = budget_with_lease()
    usages = [Usage("a", 1, Decimal(1)), Usage("b", None, Decimal(1)), Usage("c", 3, Decimal(1))]
    leases.report(budget.status, account=AGENT, lease_id="lease_1", usages=usages, now=T0)
    hold = budget.status.accounts[AGENT].leases["lease_1"]
    assert leaserecords.status_of(hold)["reportedRequests"] == 3


def test_late_spending_is_recorded_on_the_budget_lease() -> None:
    budget = budget_with_lease()
    later = T0 + timedelta(minutes=1)
    leases.close(budget.status, account=AGENT, lease_id="lease_1", now=later, state="revoked")
    usage = Usage("a", 1, Decimal("2.5"), int(T0.timestamp()))
    leases.report(budget.status, account=AGENT, lease_id="lease_1", usages=[usage], now=later)
    hold = budget.status.accounts[AGENT].leases["lease_1"]
    recorded = leaserecords.status_of(hold)
    assert (recorded["phase"], recorded["spent"], recorded["lateSpent"]) == (
        "Revoked",
        "2.5",
        "2.5",
    )
