"""Per-agent allocations and informative budgets (issue 24 item 5).

An agent leases up to its own allocation (spec.agentAllocations, written by `agent create
--allocation` and `agent set`), changed at once and never below what is committed; spending
by provider, project and in all is measured against spec.informativeAllocations and never
refused. Through the real lease API on the embedded ledger, plus the engine's rules."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from budgetops.apis.agents import InformativeAllocations, SpentBy
from budgetops.apis.trustbudget import TrustBudgetSpec, TrustBudgetStatus
from budgetops.engine import spending
from budgetops.engine.alerts import UsageSamples
from budgetops.engine.reconcile import reconcile_trust
from budgetops.engine.rollover import trust_account
from budgetops.observability.metrics import BudgetCollector
from tests.conftest import EXAMPLES
from tests.leases import BUDGET, LeaseApi, cli, create_agent, handshake, lease_api


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with lease_api(tmp_path) as served:
        yield served


def report(lease_id: str, seq: int, cost: float) -> dict[str, Any]:
    record = {"request_id": f"req_{seq}", "seq": seq, "tokens": 100, "cost_usd": cost,
              "model": "gpt-4", "provider": "openai", "timestamp": 1764757845}  # fmt: skip
    return {"lease_id": lease_id, "reports": [record]}


def agent_cli(api: LeaseApi, *argv: str) -> tuple[int, str]:
    return cli("agent", *argv, "--budget", BUDGET, "--db", str(api.db))


def apply_example(api: LeaseApi, tmp_path: Path, **spec: Any) -> None:
    """The example budget again, with `spec` merged in, applied as a user would."""
    document = yaml.safe_load((EXAMPLES / "trustbudget-llm-spend.yaml").read_text())
    document["spec"] |= spec
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(document))
    code, text = cli("apply", "-f", str(path), "--db", str(api.db))
    assert code == 0, text


def test_an_agent_leases_up_to_its_own_allocation_and_others_keep_the_budgets(
    api: LeaseApi,
) -> None:
    agent_id, token = create_agent(api.db, "--allocation", "15.00")
    other_id, other = create_agent(api.db)
    assert api.budget().spec.agent_allocations == {agent_id: Decimal("15.00")}
    assert api.account(agent_id).allocation == 15  # opened with it, never 100 first
    first = handshake(api, token)[1]
    assert (first["budget_granted"], first["budget_remaining"]) == (10, 5)
    assert handshake(api, token)[1]["budget_granted"] == 5  # only what is left of 15
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (403, "BUDGET_EXCEEDED")
    assert "budget of 15.00 USD" in body["error"]["message"]
    assert handshake(api, other, 50)[1]["budget_remaining"] == 50  # initialBalance 100
    code, listed = agent_cli(api, "list")
    assert code == 0
    assert f"{agent_id}  active  openai  0.00 of 15.00 USD left (own allocation 15.00)" in listed
    assert f"{other_id}  active  openai  50.00 of 100.00 USD left  1 open" in listed


def test_a_changed_allocation_applies_at_once_and_never_below_what_is_lent(
    api: LeaseApi,
) -> None:
    agent_id, token = create_agent(api.db, "--allocation", "15")
    lease_id = handshake(api, token)[1]["lease_id"]  # 10 lent
    assert api.call("POST", "/budget/report", report(lease_id, 1, 4), token=token)[0] == 200

    code, text = agent_cli(api, "set", agent_id, "--allocation", "40")
    assert (code, text) == (0, f"agent: {agent_id}: 30.00 of 40.00 USD left\n")
    account = api.account(agent_id)
    assert (account.allocation, account.balance, account.leased_out) == (40, 30, 6)
    assert handshake(api, token, 30)[1]["budget_granted"] == 30

    code, text = agent_cli(api, "set", agent_id, "--allocation", "1")  # below the 40 committed
    assert code == 0, text
    account = api.account(agent_id)
    assert (account.allocation, account.balance, account.leased_out) == (40, 0, 36)
    assert api.budget().spec.agent_allocations[agent_id] == 1
    # The lease in flight keeps what it was lent: its spending is still counted.
    counted = api.call("POST", "/budget/report", report(lease_id, 2, 6), token=token)[1]
    assert (counted["accepted"], counted["remaining"]) == (1, 0)
    released = api.call("POST", "/budget/release", {"lease_id": lease_id}, token=token)
    assert released[0] == 200, released[2]
    assert handshake(api, token)[0] == 403  # 10 spent and 30 lent: the allocation is 1

    code, _ = agent_cli(api, "set", agent_id, "--allocation", "default")
    assert code == 0
    assert agent_id not in api.budget().spec.agent_allocations
    assert api.account(agent_id).allocation == 100


def test_bad_allocations_are_refused_and_change_nothing(api: LeaseApi, tmp_path: Path) -> None:
    agent_id, _ = create_agent(api.db, "--allocation", "15")
    before = api.budget()
    for amount in ("0", "-3", "ten", "1.5e3", "0.1234567"):
        code, text = agent_cli(api, "set", agent_id, "--allocation", amount)
        assert code != 0, (amount, text)
    code, text = agent_cli(api, "set", "agent_nobody00", "--allocation", "5")
    assert (code, "no agent agent_nobody00" in text) == (2, True)
    after = api.budget()
    assert (after.spec, after.status.accounts) == (before.spec, before.status.accounts)
    apply_example(api, tmp_path, unit="points", initialBalance="100", cost="1")
    code, text = create_agent_raw(api, "--allocation", "5")
    assert code == 2
    assert "set unit: USD" in text
    assert api.budget().status.agents.keys() == {agent_id}  # no agent half made


def create_agent_raw(api: LeaseApi, *extra: str) -> tuple[int, str]:
    return cli(
        "agent", "create", "--budget", BUDGET, "--provider", "openai",
        "--provider-key-secret", "openai/api-key", "--db", str(api.db), *extra,
    )  # fmt: skip


def test_an_allocation_applied_with_the_spec_is_taken_on_the_next_lease(
    api: LeaseApi, tmp_path: Path
) -> None:
    """kubectl apply of spec.agentAllocations: no CLI, the next touch resizes."""
    agent_id, token = create_agent(api.db)
    apply_example(api, tmp_path, agentAllocations={agent_id: "12.50"})
    assert api.account(agent_id).allocation == 100  # nothing touched it yet
    answer = handshake(api, token, 20)[1]
    assert (answer["budget_granted"], answer["budget_remaining"]) == (Decimal("12.50"), 0)


def test_informative_allocations_show_progress_and_refuse_nothing(
    api: LeaseApi, tmp_path: Path
) -> None:
    informative = {"total": "2.00", "providers": {"openai": "1.00"}, "projects": {"web": "9"}}
    apply_example(api, tmp_path, informativeAllocations=informative)
    agent_id, token = create_agent(api.db)  # project checkout, which has no allocation
    lease_id = handshake(api, token, 5)[1]["lease_id"]
    counted = api.call("POST", "/budget/report", report(lease_id, 1, 1.15), token=token)[1]
    assert counted["accepted"] == 1  # past the provider's 1.00: counted, never refused
    shares = api.budget().status.spent_by.percent_used
    assert shares is not None
    assert (shares.total, shares.providers, shares.projects) == (
        "57.5",
        {"openai": "115.0"},
        {"web": "0.0"},
    )
    registry = CollectorRegistry()
    registry.register(BudgetCollector(api.store))
    where = {"kind": "TrustBudget", "namespace": "", "name": BUDGET}
    openai = where | {"scope": "provider", "of": "openai"}
    assert registry.get_sample_value("budgetops_lease_informative_percent_used", openai) == 115
    assert registry.get_sample_value("budgetops_lease_informative_allocation", openai) == 1
    total = where | {"scope": "total", "of": ""}
    assert registry.get_sample_value("budgetops_lease_informative_percent_used", total) == 57.5

    code, text = cli("status", BUDGET, "--db", str(api.db))
    assert code == 0, text
    assert "total: spent 1.15 of 2.00 USD (57.5%, informative: never refused)\n" in text
    assert "provider openai: spent 1.15 of 1.00 USD (115.0%" in text
    assert "project web: spent 0.00 of 9.00 USD (0.0%" in text
    code, listing = cli("status", "--db", str(api.db))
    assert "  provider openai: spent 1.15 of 1.00 USD (115.0%" in listing
    assert api.account(agent_id).spent == Decimal("1.15")


# The engine's rules -------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def usd_spec(**extra: Any) -> TrustBudgetSpec:
    return TrustBudgetSpec.model_validate(
        {"subjects": {"patterns": ["*"]}, "match": [{"resource": "budgetleases"}],
         "initialBalance": "100", "unit": "USD", "resetInterval": "7d"} | extra
    )  # fmt: skip


def test_an_agents_allocation_opens_resets_and_resizes_its_account_alone() -> None:
    status = TrustBudgetStatus()
    own = "agent_aaaaaa"

    def touch(allocation: str, key: str = own, now: datetime = NOW) -> tuple[Decimal, Decimal]:
        trust_account(status, usd_spec(agentAllocations={own: allocation}), key=key, now=now)
        return status.accounts[key].allocation, status.accounts[key].balance

    assert touch("20") == (20, 20)
    assert touch("20", key="agent_bbbbbb") == (100, 100)  # initialBalance
    status.accounts[own].spent, status.accounts[own].balance = Decimal(18), Decimal(2)
    assert touch("5") == (18, 0)  # never below what is spent
    assert touch("5", now=datetime(2026, 3, 20, tzinfo=UTC)) == (5, 5)  # reset: a full 5
    assert status.accounts["agent_bbbbbb"].allocation == 100


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"unit": "points", "agentAllocations": {"agent_aaaaaa": "5"}}, "set unit: USD"),
        ({"unit": "points", "informativeAllocations": {"total": "5"}}, "set unit: USD"),
        ({"agentAllocations": {"agent_" + "a" * 40: "5"}}, "is no agent id"),
        ({"agentAllocations": {"agent_aaaaaa": "0"}}, "greater than zero"),
        ({"informativeAllocations": {"providers": {"x" * 64: "5"}}}, "at most 63"),
        (
            {"informativeAllocations": {"projects": {str(n): "1" for n in range(65)}}},
            "at most 64 items",
        ),
    ],
)
def test_allocations_out_of_bounds_are_refused_by_the_model(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        usd_spec(**extra)


def test_a_reconcile_measures_against_a_changed_spec_and_says_it_changed() -> None:
    status = TrustBudgetStatus(spent_by=SpentBy(total=Decimal(3), projects={"web": Decimal(3)}))

    def reconcile(spec: TrustBudgetSpec) -> bool:
        return reconcile_trust(
            status, spec, budget="b", generation=2, now=NOW, seen=None, samples=UsageSamples()
        ).changed

    reconcile(usd_spec())
    assert not reconcile(usd_spec())  # nothing new: nothing to write
    assert reconcile(usd_spec(informativeAllocations={"total": "12", "projects": {"web": "4"}}))
    assert status.spent_by.percent_used is not None
    assert (status.spent_by.percent_used.total, status.spent_by.percent_used.projects) == (
        "25.0",
        {"web": "75.0"},
    )
    assert reconcile(usd_spec())  # the allocations removed: no progress shown
    assert status.spent_by.percent_used is None
    assert spending.progress(status.spent_by, InformativeAllocations()) == []


def test_a_reset_refills_an_agent_to_its_own_allocation_and_the_notice_says_so() -> None:
    status = TrustBudgetStatus()
    spec = usd_spec(agentAllocations={"agent_aaaaaa": "20"})
    for key in ("agent_aaaaaa", "agent_bbbbbb"):
        trust_account(status, spec, key=key, now=NOW)
        status.accounts[key].spent, status.accounts[key].balance = Decimal(1), Decimal(0)
        status.accounts[key].allocation = Decimal(1)
    outcome = reconcile_trust(
        status, spec, budget="b", generation=1, now=datetime(2026, 3, 20, tzinfo=UTC),
        seen=None, samples=UsageSamples(),
    )  # fmt: skip
    assert [status.accounts[k].balance for k in ("agent_aaaaaa", "agent_bbbbbb")] == [20, 100]
    [reset] = [n for n in outcome.notices if n.reason == "AccountsReset"]
    assert reset.summary.startswith(
        "2 accounts reset to 100.00 USD (1 to their agent's own allocation)"
    )


def test_an_account_held_at_what_is_committed_is_not_adjusted_again_on_every_touch() -> None:
    status = TrustBudgetStatus()
    trust_account(status, usd_spec(), key="agent_aaaaaa", now=NOW)
    account = status.accounts["agent_aaaaaa"]
    account.spent, account.balance = Decimal(30), Decimal(70)
    lowered = usd_spec(agentAllocations={"agent_aaaaaa": "10"})
    for _ in range(3):
        trust_account(status, lowered, key="agent_aaaaaa", now=NOW)
    adjusted = [r for r in status.queued_audit() if r["action"] == "adjust"]
    assert [(r["allocation"], r["balance"]) for r in adjusted] == [("30", "0")]
    account.spent = Decimal(20)  # a correction returned 10: the account follows the spec down
    account.balance = Decimal(10)
    trust_account(status, lowered, key="agent_aaaaaa", now=NOW)
    assert (account.allocation, account.balance) == (20, 0)
