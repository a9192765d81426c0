"""Break-glass with a quorum (issue 24 item 1): a denied ask opens a request, distinct
approvers named in the quorum (never the requester) approve it before its deadline, and the
next ask passes exactly once, audited with its approvers and announced to the channels."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from budgetops.adapters.approvals import KubeApprovals
from budgetops.apis.resources import BudgetApproval, BudgetKey, TrustBudget
from budgetops.apis.trustbudget import Quorum, SubjectSet
from budgetops.engine import breakglass
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import BreakGlassAsk
from budgetops.engine.reconcile import reconcile_trust
from budgetops.observability.metrics import ReconcileMetrics
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases import administering
from budgetops.usecases.reconciling import Reconciler

from .test_cli import run
from .test_decisions import BREAK_GLASS, NOW, charge, glass, trust_budget
from .test_decisions import ask as plain_ask
from .test_reconciler_wiring import Recorded

QUORUM = {"required": 2, "approvers": {"users": ["alice", "bob", "carol"], "groups": ["sre"]}}
DEADLINE = "2026-01-01T16:30:00Z"


def ask(**overrides: Any) -> BreakGlassAsk:
    """alice's ask of TrustBudget certs (as admission names the budget in it)."""
    return plain_ask(**({"budget": "certs"} | overrides))


def quorate(now: datetime = NOW, **quorum: Any) -> TrustBudget:
    """An exhausted budget (at `now`) whose break-glass needs QUORUM."""
    budget = trust_budget(initialBalance=1, breakGlass=BREAK_GLASS | {"quorum": QUORUM | quorum})
    charge(budget, "first", now=now)
    return budget


def approve(budget: TrustBudget, request: str, approver: str, **kw: Any) -> breakglass.Approved:
    return breakglass.approve(
        budget.status,
        budget.spec,
        budget="certs",
        request_id=request,
        approver=approver,
        groups=kw.get("groups", []),
        now=kw.get("now", NOW + timedelta(minutes=1)),
    )


def opened(budget: TrustBudget, now: datetime = NOW) -> str:
    """Ask once (denied) and return the id of the request the denial opened."""
    denied = glass(budget, "bg-0", ask(), now=now)
    assert not denied.allowed
    [request] = budget.status.break_glass_requests
    return request.id


def test_an_ask_opens_a_request_and_the_denial_says_who_approves_how_and_by_when() -> None:
    budget = quorate()
    denied = glass(budget, "bg-1", ask())
    [request] = budget.status.break_glass_requests
    assert request.id == breakglass.request_id(
        "certs", "user:alice", "alice", "CertificateSigningRequest/bg-1", NOW
    )
    assert request.id.startswith("bg-")
    assert len(request.id) == 13
    assert (request.account, request.user, request.deadline) == (
        "user:alice", "alice", NOW + timedelta(hours=1),
    )  # fmt: skip
    assert denied.message == (
        "Trust budget exhausted. This request requires 1 points; 0 remain. Budget resets at "
        "2026-01-02T00:00:00Z. Break-glass needs approval: this budget requires 2 approvals "
        "from alice, bob, carol or group sre. Request "
        f"{request.id} is open until {DEADLINE}; each approver runs: kubectl budget approve "
        f"certs {request.id}. Then send this request again."
    )
    [record] = budget.status.queued_audit()[-1:]
    assert record["action"] == "break-glass-refused"
    assert record["detail"]["request"] == request.id, "the denial's write stores the request"
    again = glass(budget, "bg-1", ask())  # the same object asked again
    assert len(budget.status.break_glass_requests) == 1, "one open request per object asked"
    assert again.message.endswith(
        f"Break-glass needs approval: request {request.id} has 0 of the 2 approvals it needs "
        f"(none yet); 2 more from alice, bob, carol or group sre by {DEADLINE}: kubectl budget "
        f"approve certs {request.id}, then send this request again."
    )


def test_two_distinct_approvers_let_it_pass_exactly_once_with_them_in_the_audit() -> None:
    budget = quorate()
    request = opened(budget)
    first = approve(budget, request, "bob")
    assert first == breakglass.Approved(
        True, f"bob's approval of {request} recorded (1 of 2): 1 more needed by {DEADLINE}"
    )
    assert "has 1 of the 2 approvals it needs (bob); 1 more" in glass(budget, "bg-0", ask()).message
    second = approve(budget, request, "carol")
    assert second.reached
    assert second.message.endswith(f"(2 of 2): it may pass once, until {DEADLINE}")
    other = glass(budget, "bg-other", ask())  # approved for bg-0, not for anything else
    assert not other.allowed
    assert "Break-glass needs approval: this budget requires 2 approvals" in other.message
    passed = glass(budget, "bg-0", ask())
    assert (passed.allowed, passed.reason, passed.cost) == (True, "BreakGlass", 0)
    assert passed.warnings == (
        "Break-glass used by alice for user:alice: INC-42 prod down "
        f"(request {request}, approved by bob, carol)",
    )
    [use] = budget.status.break_glass_uses
    assert (use.approvers, use.announced) == (["bob", "carol"], False)
    record = budget.status.queued_audit()[-1]
    assert record["action"] == "break-glass"
    assert (record["detail"]["approvers"], record["detail"]["request"]) == (
        ["bob", "carol"],
        request,
    )
    approved = [r for r in budget.status.queued_audit() if r["action"] == "break-glass-approved"]
    assert [r["detail"]["approver"] for r in approved] == ["bob", "carol"]
    again = glass(budget, "bg-4", ask())
    assert not again.allowed, "a request passes once"
    assert "Break-glass needs approval: this budget requires 2 approvals" in again.message
    assert len(budget.status.break_glass_uses) == 1
    assert {r.id for r in budget.status.break_glass_requests} - {request} != set(), "a new one"


@pytest.mark.parametrize(
    ("approver", "groups", "said"),
    [
        ("alice", [], "alice asked for {id}: nobody approves their own"),
        ("dave", [], "dave is not among the approvers of TrustBudget certs (alice, bob, carol "
         "or group sre)"),
        ("dave", ["oncall"], "dave is not among the approvers of TrustBudget certs (alice, bob, "
         "carol or group sre)"),
    ],
)  # fmt: skip
def test_an_approval_that_does_not_count_says_why(
    approver: str, groups: list[str], said: str
) -> None:
    budget = quorate()
    request = opened(budget)
    assert approve(budget, request, approver, groups=groups) == breakglass.Approved(
        False, said.format(id=request)
    )
    assert budget.status.break_glass_requests[0].approvals == []
    assert budget.status.queued_audit()[-1]["action"] == "break-glass-refused", "none audited"


def test_a_group_named_in_the_quorum_approves_and_approving_twice_counts_once() -> None:
    budget = quorate()
    request = opened(budget)
    assert approve(budget, request, "erin", groups=["sre"]).recorded
    again = approve(budget, request, "erin", groups=["sre"])
    assert again == breakglass.Approved(
        True, f"erin's approval of {request} was recorded already (1 of 2)"
    )
    assert [a.approver for a in budget.status.break_glass_requests[0].approvals] == ["erin"]
    assert not glass(budget, "x", ask()).allowed, "one person is one approval"


def test_past_its_deadline_a_request_is_gone_and_a_new_one_is_needed() -> None:
    budget = quorate(approvalWindow="10m")
    request = opened(budget)
    late = NOW + timedelta(minutes=10)
    assert approve(budget, request, "bob", now=late) == breakglass.Approved(
        False,
        f"TrustBudget certs has no open break-glass request {request}: its deadline passed, or "
        "it never existed; the requester asks again for a new one",
    )
    approve(budget, request, "bob")
    approve(budget, request, "carol")
    denied = glass(budget, "bg-late", ask(), now=late)
    assert not denied.allowed, "approved, but past its deadline"
    [fresh] = budget.status.break_glass_requests
    assert fresh.id != request
    assert fresh.deadline == late + timedelta(minutes=10)
    assert budget.status.break_glass_uses == []


def test_a_dry_run_opens_nothing_and_uses_nothing() -> None:
    budget = quorate()
    dry = glass(budget, "bg-dry", ask(), dry_run=True)
    assert not dry.allowed
    assert dry.message.endswith("a dry run opens no request for them.")
    assert budget.status.break_glass_requests == []
    assert budget.status.queued_audit()[-1]["action"] != "break-glass-refused"
    request = opened(budget)
    approve(budget, request, "bob")
    approve(budget, request, "carol")
    assert glass(budget, "bg-0", ask(), dry_run=True).reason == "DryRun"
    assert budget.status.break_glass_requests[0].used_at is None, "still there to use"
    assert glass(budget, "bg-0", ask()).reason == "BreakGlass"


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (ask(permitted=False), "alice is not among this budget's break-glass subjects"),
        (ask(ttl=timedelta(hours=2)), "the certificate lifetime 7200s exceeds 3600s"),
    ],
)
def test_the_other_break_glass_checks_come_first_and_open_nothing(
    request_: BreakGlassAsk, refusal: str
) -> None:
    budget = quorate()
    denied = glass(budget, "bg", request_)
    assert denied.message.endswith(f"Break-glass refused: {refusal}.")
    assert budget.status.break_glass_requests == []


@pytest.mark.parametrize("window", ["30s", "25h", "2d", "24h1s"])
def test_the_approval_window_is_bounded(window: str) -> None:
    with pytest.raises(ValidationError, match="approvalWindow must be from 1m to 24h"):
        Quorum.model_validate(
            {"required": 1, "approvers": {"users": ["b"]}, "approvalWindow": window}
        )
    assert Quorum.model_validate(
        {"required": 1, "approvers": {"users": ["b"]}, "approvalWindow": "24h"}
    ).approval_window == timedelta(hours=24)


def test_subject_sets_name_people_as_admission_does() -> None:
    named = SubjectSet(users=["bob"], groups=["sre"], service_accounts=["ops/*"], patterns=["a*"])
    assert named.names("bob", [])
    assert named.names("x", ["sre"])
    assert named.names("system:serviceaccount:ops:bot", [])
    assert named.names("ann", [])
    assert not named.names("system:serviceaccount:dev:bot", ["dev"])
    assert named.describe() == "bob, group sre, service account ops/* or a username matching a*"


def _reconcile(budget: TrustBudget, now: datetime) -> list[tuple[str, str, str]]:
    outcome = reconcile_trust(
        budget.status, budget.spec, budget="TrustBudget certs", generation=None, now=now,
        seen=None, samples=UsageSamples(),
    )  # fmt: skip
    return [(n.reason, n.severity, n.summary) for n in outcome.notices if "BreakGlass" in n.reason]


def test_the_reconciler_announces_each_step_once_and_drops_closed_requests() -> None:
    budget = quorate()
    request = opened(budget)
    at = NOW + timedelta(minutes=2)
    assert _reconcile(budget, at) == [
        ("BreakGlassRequested", "warning",
         f"user:alice: alice asks to break the glass (INC-42 prod down); request {request} "
         f"needs 2 approvals by {DEADLINE}"),
    ]  # fmt: skip
    assert _reconcile(budget, at) == [], "told once"
    approve(budget, request, "bob")
    approve(budget, request, "carol")
    glass(budget, "bg-0", ask())
    assert _reconcile(budget, at) == [
        ("BreakGlassApproved", "warning",
         f"user:alice: alice's request {request} approved by bob, carol; it may pass once until "
         f"{DEADLINE}"),
        ("BreakGlassUsed", "critical",
         "user:alice: break-glass used by alice for CertificateSigningRequest/bg-0 "
         "(approved by bob, carol): INC-42 prod down"),
    ]  # fmt: skip
    assert _reconcile(budget, at) == []
    assert breakglass.next_deadline(budget.status) == NOW + timedelta(hours=1)
    _reconcile(budget, NOW + timedelta(hours=1))
    assert budget.status.break_glass_requests == [], "taken out at its deadline"


class Desk:
    """BudgetApproval objects as the reconciler sees them, and its answers."""

    def __init__(self, *approvals: tuple[str, str, str]) -> None:
        self.approvals = [
            BudgetApproval.model_validate(
                {
                    "metadata": {"name": name},
                    "spec": {"budget": "certs", "request": request, "approver": approver},
                }
            )
            for name, request, approver in approvals
        ]
        self.answers: dict[str, tuple[bool, str]] = {}

    def waiting(self, budget: str) -> list[BudgetApproval]:
        return [a for a in self.approvals if a.metadata.name not in self.answers]

    def budget_of(self, key: BudgetKey) -> str | None:
        return "certs"

    def answer(self, approval: BudgetApproval, *, recorded: bool, message: str) -> None:
        self.answers[approval.metadata.name] = (recorded, message)


def test_the_reconciler_records_waiting_approvals_and_answers_each(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    key = BudgetKey.of(store.apply(quorate()))
    request = store.update_status(key, opened)  # type: ignore[arg-type]
    desk = Desk(("a", request, "bob"), ("b", request, "alice"), ("c", "bg-0000000000", "carol"))
    events = Recorded()
    reconciler = Reconciler(
        store=store, objects=None, clock=lambda: NOW + timedelta(minutes=1), events=events,
        metrics=ReconcileMetrics(CollectorRegistry()), approvals=desk,
    )  # fmt: skip
    reconciler.reconcile(key)
    assert desk.answers == {
        "a": (True, f"bob's approval of {request} recorded (1 of 2): 1 more needed by {DEADLINE}"),
        "b": (False, f"alice asked for {request}: nobody approves their own"),
        "c": (False, "TrustBudget certs has no open break-glass request bg-0000000000: its "
              "deadline passed, or it never existed; the requester asks again for a new one"),
    }  # fmt: skip
    stored = store.get(key)
    assert isinstance(stored, TrustBudget)
    assert [a.approver for a in stored.status.break_glass_requests[0].approvals] == ["bob"]
    assert ("Warning", "BreakGlassRequested") in [(t, r) for t, r, _ in events.events]
    records = [json.loads(line) for line in store.audit_lines()]
    assert [r["detail"]["approver"] for r in records if r["action"] == "break-glass-approved"] == [
        "bob"
    ]
    desk.answers.clear()
    reconciler.reconcile(key)
    assert desk.answers["a"][1].endswith("was recorded already (1 of 2)"), "counted once"
    store.close()


def test_budgetops_approve_records_on_the_embedded_ledger_and_status_lists_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    now = system_clock()  # the command's own clock: the request must be open then
    store = SQLiteStore(path)
    key = BudgetKey.of(store.apply(quorate(now)))
    request = store.update_status(key, lambda b: opened(b, now))  # type: ignore[arg-type]
    store.close()
    code, out = run("approve", "certs", request, "--by", "bob", "--db", str(path))
    assert (code, out.split(" (1 of 2)")[0]) == (0, f"bob's approval of {request} recorded")
    code, out = run("approve", "certs", request, "--by", "alice", "--db", str(path))
    assert (code, out) == (1, f"alice asked for {request}: nobody approves their own\n")
    code, out = run("status", "certs", "--db", str(path))
    assert (
        f"Break-glass request {request}: user:alice by alice (INC-42 prod down), 1 of 2 "
        f"approvals (bob), open until" in out
    )
    assert f"approve: kubectl budget approve certs {request}" in out
    assert administering.approve_break_glass(
        SQLiteStore(path), "certs", request=request, approver="carol", clock=lambda: now
    ).reached


def test_a_charge_while_the_balance_covers_it_never_touches_the_quorum() -> None:
    budget = trust_budget(initialBalance=5, breakGlass=BREAK_GLASS | {"quorum": QUORUM})
    assert glass(budget, "bg", ask()).cost == Decimal(1)
    assert budget.status.break_glass_requests == []


def test_the_embedded_ledger_refuses_a_budget_approval_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "approval.yaml"
    manifest.write_text(
        "apiVersion: budgetops.dev/v1alpha1\nkind: BudgetApproval\nmetadata: {name: a}\n"
        "spec: {budget: certs, request: bg-0123456789, approver: bob}\n"
    )
    code, out = run("apply", "-f", str(manifest), "--db", str(tmp_path / "ledger.sqlite3"))
    assert code == 2
    assert "approved with `budgetops approve BUDGET ID --by NAME`, not a BudgetApproval" in out


class Cache:
    """The store's cache as the cluster's approval desk sees it: objects and listeners."""

    def __init__(self) -> None:
        self.held: dict[BudgetKey, BudgetApproval] = {}
        self.listeners: list[Callable[[BudgetKey], None]] = []

    def get(self, key: BudgetKey) -> BudgetApproval | None:
        return self.held.get(key)

    def budget_keys(self) -> list[BudgetKey]:
        return sorted(self.held)

    def put(self, name: str, budget: str, recorded: bool | None = None) -> BudgetKey:
        key = BudgetKey("BudgetApproval", name)
        self.held[key] = BudgetApproval.model_validate(
            {
                "metadata": {"name": name},
                "spec": {"budget": budget, "request": "bg-0123456789", "approver": name},
                "status": {} if recorded is None else {"recorded": recorded},
            }
        )
        self._tell(key)
        return key

    def drop(self, key: BudgetKey) -> None:
        del self.held[key]
        self._tell(key)

    def _tell(self, key: BudgetKey) -> None:
        for listener in self.listeners:
            listener(key)


def test_the_cluster_desk_keeps_each_budgets_unanswered_approvals() -> None:
    cache = Cache()
    first = cache.put("ann", "certs")  # listed before the desk listened
    desk = KubeApprovals(ApiClient(), cache, lambda: NOW)
    other = cache.put("bob", "other")
    cache.put("cid", "certs", recorded=False)

    def waiting(budget: str) -> list[str]:
        return [a.metadata.name for a in desk.waiting(budget)]

    assert (waiting("certs"), waiting("other"), waiting("none")) == (["ann"], ["bob"], [])
    assert desk.budget_of(first) == "certs"
    cache.put("ann", "certs", recorded=True)
    cache.drop(other)
    assert (waiting("certs"), waiting("other")) == ([], [])
    assert desk.budget_of(other) is None
