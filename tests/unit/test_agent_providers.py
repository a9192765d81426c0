"""Several providers per agent: `agent create --also-provider`, a handshake that names one
gets that provider's key sealed (the first when it names none), an unknown one is a 400 that
lends nothing, and the SDK asks for one with `provider=`."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from budgetops.client import SyncBudgetClient
from budgetops.crypto import sealing
from tests.leases import PROVIDER_KEY, LeaseApi, cli, create_agent, lease_api

ANTHROPIC_KEY = "sk-ant-test-0123456789"


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with lease_api(tmp_path) as served:
        secrets = served.db.with_name(served.db.name + ".secrets") / "anthropic"
        secrets.mkdir(parents=True)
        (secrets / "api-key").write_text(ANTHROPIC_KEY)
        yield served


def hello(token: str, **more: Any) -> dict[str, Any]:
    return {"ic_token": token, "requested_budget": 10, "runtime_version": "0.1.0", **more}


def opened(token: str, body: dict[str, Any]) -> str:
    salt = base64.b64decode(body["key_salt"])
    return sealing.open_sealed(
        body["ip_token"], identity_token=token, lease_id=body["lease_id"], salt=salt
    )


def test_a_handshake_gets_the_provider_it_names(api: LeaseApi) -> None:
    agent_id, token = create_agent(api.db, "--also-provider", "anthropic=anthropic/api-key")
    status, body, text = api.call("POST", "/auth/handshake", hello(token))
    assert status == 200, text
    assert (body["provider"], opened(token, body)) == ("openai", PROVIDER_KEY), "the first"
    status, body, text = api.call("POST", "/auth/handshake", hello(token, provider="anthropic"))
    assert status == 200, text
    assert (body["provider"], opened(token, body)) == ("anthropic", ANTHROPIC_KEY)
    assert "provider_model" not in body, "anthropic was given no model"

    before = api.account(agent_id).leased_out
    status, body, _ = api.call("POST", "/auth/handshake", hello(token, provider="mistral"))
    assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST")
    assert body["error"]["message"] == (
        f"provider: {agent_id} has no provider 'mistral'; its providers: openai, anthropic"
    )
    assert api.account(agent_id).leased_out == before, "nothing lent"

    listed = cli("agent", "list", "--budget", "agent-llm-spend", "--db", str(api.db))[1]
    assert f"{agent_id}  active  openai,anthropic  " in listed, listed
    url = f"http://127.0.0.1:{api.port}"
    with SyncBudgetClient(url, token, provider="anthropic") as budget:
        assert budget.provider == "anthropic"
        assert budget.provider_key() == ANTHROPIC_KEY


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("anthropic", "--also-provider 'anthropic': write it as PROVIDER=NAME/KEY"),
        ("Anthropic=anthropic/api-key", "--also-provider 'Anthropic=anthropic/api-key': provider"),
        ("openai=anthropic/api-key", "an agent's providers must differ: openai, openai"),
        ("anthropic=anthropic/missing", "missing"),
    ],
)
def test_a_bad_extra_provider_adds_no_agent(api: LeaseApi, flag: str, message: str) -> None:
    agents = len(api.budget().status.agents)
    code, out = cli(
        "agent", "create", "--budget", "agent-llm-spend", "--provider", "openai",
        "--provider-key-secret", "openai/api-key", "--also-provider", flag, "--db", str(api.db),
    )  # fmt: skip
    assert code != 0
    assert message in out, out
    assert len(api.budget().status.agents) == agents
