"""Session limits (`spec.sessions`): the cap on one call and the warning share, told with each
lease, kept by the SDK before a call, flagged and warned of by the lease API, heard by the
runtime through its callback. The real SDK against the real lease API on the embedded ledger."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from budgetops.apis.resources import TrustBudget
from budgetops.client import BudgetClient, CallOverLimit, UsageWarning
from tests.conftest import EXAMPLES
from tests.leases import LeaseApi, cli, create_agent, handshake, lease_api


def limited(tmp_path: Path, **sessions: object) -> Path:
    """The example USD budget with `sessions`, applied to a new ledger in `tmp_path`."""
    manifest = yaml.safe_load((EXAMPLES / "trustbudget-llm-spend.yaml").read_text())
    manifest["spec"]["sessions"] = sessions
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(manifest))
    code, text = cli("apply", "-f", str(path), "--db", str(tmp_path / "ledger.sqlite3"))
    assert code == 0, text
    return path


def report(api: LeaseApi, token: str, lease_id: str, *costs: float) -> dict[str, object]:
    status, body, text = api.call(
        "POST",
        "/budget/report",
        {
            "lease_id": lease_id,
            "reports": [
                {"request_id": f"req_{seq}", "seq": seq, "tokens": 10, "cost_usd": cost,
                 "model": "gpt-4", "provider": "openai", "timestamp": 1764757845}
                for seq, cost in enumerate(costs, start=1)
            ],
        },
        token=token,
    )  # fmt: skip
    assert status == 200, text
    return dict(body)


def test_the_lease_api_tells_the_limits_flags_a_costly_call_and_warns(tmp_path: Path) -> None:
    limited(tmp_path, maxCallCost="2.00", warnAtPercent=80)
    with lease_api(tmp_path) as api:
        _, token = create_agent(api.db)
        status, lease, text = handshake(api, token)
        assert status == 200, text
        assert (lease["max_call_cost"], lease["warn_at_percent"]) == (Decimal("2.00"), 80)
        first = report(api, token, lease["lease_id"], 5.00, 1.00)
        assert first["over_max_call_cost"] == ["req_1"]  # counted all the same: it was spent
        assert first["spent"] == Decimal("6.00")
        assert "warnings" not in first  # 60% of the lease
        second = report(api, token, lease["lease_id"], 5.00, 1.00, 2.50)
        (warning,) = second["warnings"]  # type: ignore[misc]
        assert warning == {
            "scope": "lease",
            "percent_used": "85.0",
            "message": f"{lease['lease_id']} has spent 8.50 of the 10.00 USD it was granted "
            "(85.0%; the budget warns at 80%)",
        }


def test_an_account_past_the_share_is_warned_in_every_report_answer(tmp_path: Path) -> None:
    limited(tmp_path, warnAtPercent=5)
    with lease_api(tmp_path) as api:
        agent, token = create_agent(api.db)
        _, lease, _ = handshake(api, token, 10)
        answer = report(api, token, lease["lease_id"], 6.00)
        scopes = {w["scope"]: w for w in answer["warnings"]}  # type: ignore[attr-defined]
        assert scopes["account"]["message"] == (
            f"{agent} has spent 6.00 of its 100.00 USD this window (6.0%; the budget warns at 5%)"
        )


def test_without_sessions_the_answers_are_as_before(tmp_path: Path) -> None:
    with lease_api(tmp_path) as api:
        _, token = create_agent(api.db)
        _, lease, _ = handshake(api, token)
        assert "max_call_cost" not in lease
        assert "warnings" not in report(api, token, lease["lease_id"], 9.99)


def test_the_sdk_refuses_a_call_over_the_cap_and_hears_each_warning_once(
    tmp_path: Path,
) -> None:
    limited(tmp_path, maxCallCost="1.50", warnAtPercent=50)
    heard: list[UsageWarning] = []

    async def spend(url: str, token: str) -> None:
        async with BudgetClient(
            url, token, requested_budget=Decimal("4.00"), on_warning=heard.append
        ) as client:
            assert client.max_call_cost == Decimal("1.50")
            with pytest.raises(CallOverLimit, match=r"1\.51 USD is more than the 1\.50 USD"):
                client.check(Decimal("1.51"))
            client.check(Decimal("1.50"))
            for _ in range(3):
                client.record(Decimal("0.75"), tokens=1, model="gpt-4", provider="openai")
            await client.flush()

    with lease_api(tmp_path) as api:
        _, token = create_agent(api.db)
        asyncio.run(spend(f"http://127.0.0.1:{api.port}", token))
    assert [(w.scope, w.percent_used) for w in heard] == [("lease", Decimal("56.2"))]


def test_a_points_budget_cannot_cap_calls() -> None:
    manifest = yaml.safe_load((EXAMPLES / "trustbudget-certificates.yaml").read_text())
    manifest["spec"]["sessions"] = {"maxCallCost": "1"}
    with pytest.raises(ValueError, match=r"sessions\.maxCallCost limits the calls of a USD"):
        TrustBudget.model_validate(manifest)
