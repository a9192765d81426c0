"""The lease API end to end on the embedded ledger: every message, every error code, and bad
input of every kind gets its clear error, crashes nothing and charges nothing."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest
from prometheus_client import CollectorRegistry

from budgetops.crypto import sealing
from budgetops.engine import leases
from budgetops.leaseapi.openapi import ERRORS
from budgetops.observability.metrics import BudgetCollector
from tests.leases import BUDGET, PROVIDER_KEY, LeaseApi, cli, create_agent, handshake, lease_api

LEASE_ID = re.compile(r"^lease_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with lease_api(tmp_path) as served:
        yield served


@pytest.fixture
def agent(api: LeaseApi) -> tuple[str, str]:
    return create_agent(api.db)


def report(lease_id: str, *records: tuple[int, Any], stamped: int = 1764757845) -> dict[str, Any]:
    return {
        "lease_id": lease_id,
        "reports": [
            {"request_id": f"req_{seq}", "seq": seq, "tokens": 100, "cost_usd": cost,
             "model": "gpt-4", "provider": "openai", "timestamp": stamped}
            for seq, cost in records
        ],
    }  # fmt: skip


def test_a_handshake_lends_and_seals_the_provider_key_for_that_lease(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    status, body, text = handshake(api, token)
    assert status == 200, text
    assert LEASE_ID.fullmatch(body["lease_id"])
    assert '"budget_granted":10.00' in text
    assert '"budget_remaining":90.00' in text
    assert (body["provider"], body["provider_model"]) == ("openai", "gpt-4")
    assert body["expires_at"].endswith("Z")
    assert PROVIDER_KEY not in text
    salt = base64.b64decode(body["key_salt"])
    opened = sealing.open_sealed(
        body["ip_token"], identity_token=token, lease_id=body["lease_id"], salt=salt
    )
    assert opened == PROVIDER_KEY
    with pytest.raises(sealing.SealError, match="tag does not match"):
        sealing.open_sealed(
            body["ip_token"], identity_token=token, lease_id=f"lease_{'0' * 8}-x", salt=salt
        )
    prefix, iv, sealed, tag = body["ip_token"].split(":")
    flipped = bytearray(base64.b64decode(sealed))
    flipped[0] ^= 1
    tampered = ":".join((prefix, iv, base64.b64encode(bytes(flipped)).decode(), tag))
    with pytest.raises(sealing.SealError, match="tag does not match"):
        sealing.open_sealed(tampered, identity_token=token, lease_id=body["lease_id"], salt=salt)
    again = handshake(api, token)[1]
    assert again["ip_token"].split(":")[1] != body["ip_token"].split(":")[1]  # a fresh IV
    account = api.account(agent_id)
    assert (account.balance, account.leased_out) == (80, 20)


def test_reports_are_counted_once_and_move_the_lease_to_spent(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    status, body, text = api.call(
        "POST", "/budget/report", report(lease_id, (1, 0.05), (2, 0.10)), token=token
    )
    assert status == 200, text
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert '"spent":0.15' in text
    assert '"remaining":9.85' in text
    replay = api.call("POST", "/budget/report", report(lease_id, (2, 0.10)), token=token)[1]
    assert (replay["accepted"], replay["duplicates"]) == (0, 1)
    single = report(lease_id, (3, 1))["reports"][0] | {"lease_id": lease_id}
    assert api.call("POST", "/budget/report", single, token=token)[1]["accepted"] == 1
    account = api.account(agent_id)
    assert (account.spent, account.leased_out, account.balance) == (
        Decimal("1.15"),
        Decimal("8.85"),
        90,
    )
    registry = CollectorRegistry()
    registry.register(BudgetCollector(api.store))
    where = {"kind": "TrustBudget", "namespace": "", "name": "agent-llm-spend"}
    provider = where | {"provider": "openai"}
    assert registry.get_sample_value("budgetops_lease_spent_by_provider_total", provider) == 1.15
    assert registry.get_sample_value("budgetops_leases_active", where) == 1
    assert registry.get_sample_value("budgetops_leases_lent", where) == 8.85
    totals = api.budget().status.spent_by
    assert (totals.total, totals.providers, totals.projects) == (
        Decimal("1.15"),
        {"openai": Decimal("1.15")},
        {"checkout": Decimal("1.15")},
    )


def test_a_replay_to_another_replica_after_a_restart_is_counted_once(
    tmp_path: Path,
) -> None:
    """Two API processes over one ledger are two replicas; the second starts after the
    first stopped. The mark lives in the ledger, so neither counts a record twice."""
    with lease_api(tmp_path) as first:
        agent_id, token = create_agent(first.db)
        lease_id = handshake(first, token)[1]["lease_id"]
        first.call("POST", "/budget/report", report(lease_id, (1, 2), (3, 3)), token=token)
    with lease_api(tmp_path) as second:
        answer = second.call(
            "POST", "/budget/report", report(lease_id, (3, 3), (1, 2), (2, 1)), token=token
        )[1]
        assert (answer["accepted"], answer["duplicates"]) == (1, 2)
        assert second.account(agent_id).spent == 6


def test_refresh_lends_a_new_lease_until_the_budget_is_exhausted(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    body = handshake(api, token, 60)[1]
    budget_id = claims_of(token)["budget_id"]
    ask = {"lease_id": body["lease_id"], "budget_id": budget_id, "requested_budget": 60,
           "current_remaining": 0.5, "total_spent": 59.5}  # fmt: skip
    status, approved, text = api.call("POST", "/budget/refresh", ask, token=token)
    assert status == 200, text
    assert approved["status"] == "approved"
    assert approved["lease_id"] != body["lease_id"]
    assert '"budget_granted":40.00' in text
    assert '"budget_remaining":0.00' in text
    assert '"total_allocated":100.00' in text
    status, denied, text = api.call("POST", "/budget/refresh", ask, token=token)
    assert status == 200
    assert (denied["status"], denied["reason"]) == ("denied", "total_budget_exhausted")
    assert '"budget_remaining":0.00' in text
    raised = api.budget()
    raised.spec.initial_balance = Decimal(150)
    api.store.apply(raised)
    again = api.call("POST", "/budget/refresh", ask, token=token)[1]
    assert (again["status"], again["budget_granted"]) == ("approved", 50)
    assert api.account(agent_id).allocation == 150


def test_release_returns_the_rest_and_the_lease_can_be_read_back(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    api.call("POST", "/budget/report", report(lease_id, (1, 4)), token=token)
    status, body, text = api.call("POST", "/budget/release", {"lease_id": lease_id}, token=token)
    assert status == 200, text
    assert '"returned":6.00' in text
    assert '"budget_remaining":96.00' in text
    assert body["status"] == "released"
    status, view, text = api.call("GET", f"/budget/leases/{lease_id}", token=token)
    assert status == 200, text
    assert (view["status"], view["granted"], view["spent"], view["remaining"]) == (
        "released", 10, 4, 0,
    )  # fmt: skip
    assert view["agent_id"] == agent_id
    assert view["reported_through"] == 1
    late = api.call("POST", "/budget/report", report(lease_id, (2, 1)), token=token)[1]
    assert late["accepted"] == 1
    account = api.account(agent_id)
    assert (account.spent, account.balance, account.leased_out) == (5, 95, 0)


# Errors --------------------------------------------------------------------------------


def forged(payload: dict[str, Any], *, key: bytes = b"k" * 32, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def unsigned(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def signing_key(api: LeaseApi) -> bytes:
    path = api.db.with_name(api.db.name + ".secrets") / "budgetops-agent-signing-key" / "key"
    return bytes.fromhex(path.read_text())


def test_every_bad_token_is_refused_with_its_reason_and_charges_nothing(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    good = claims_of(token)
    key = signing_key(api)
    cases = {
        unsigned(good): "only HS256 is accepted",
        forged(good): "signature does not match",
        forged(good | {"issuer": "elsewhere"}, key=key): "issued by 'elsewhere'",
        forged(good | {"expires_at": 1_000_000}, key=key): "expired at 1970-01-12",
        forged(good | {"agent_id": "agent_X!"}, key=key): "is not of the form agent_",
        forged(good | {"budget_id": "budget_underscore"}, key=key): "is not of the form budget-",
        forged(good | {"token_id": "0" * 32}, key=key): "replaced by a newer one",
        forged(good, key=key * 2, alg="HS512"): "signed with HS512",
        "not-a-jwt": "not a JWT",
        "x" * 5000: "longer than 4096 bytes",
    }
    for bad, reason in cases.items():
        status, body, text = handshake(api, bad)
        assert status == 401, (reason, text)
        assert body["error"]["code"] == "INVALID_TOKEN"
        assert reason in body["error"]["message"], (reason, body)
        assert bad[:30] not in body["error"]["message"]
    lease_id = handshake(api, token)[1]["lease_id"]
    for bad in list(cases)[:3]:
        status, body, _ = api.call("POST", "/budget/report", report(lease_id, (1, 1)), token=bad)
        assert (status, body["error"]["code"]) == (401, "INVALID_TOKEN")
    status, body, _ = api.call("POST", "/budget/report", report(lease_id, (1, 1)))
    assert status == 401
    assert "Authorization: Bearer" in body["error"]["message"]
    account = api.account(agent_id)
    assert (account.balance, account.leased_out, account.spent) == (90, 10, 0)


def test_a_rotated_or_revoked_token_is_refused_and_its_leases_close(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    handshake(api, token)
    code, text = cli(
        "agent", "rotate", agent_id, "--budget", "agent-llm-spend", "--db", str(api.db)
    )
    assert code == 0, text
    assert "1 leases closed" in text
    new_token = dict(line.split(": ", 1) for line in text.splitlines())["token"]
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (401, "INVALID_TOKEN")
    assert "replaced by a newer one" in body["error"]["message"]
    assert api.account(agent_id).leased_out == 0
    new_lease = handshake(api, new_token)[1]["lease_id"]
    status, body, _ = api.call("POST", "/budget/report", report(new_lease, (1, 1)), token=token)
    assert (status, body["error"]["code"]) == (401, "INVALID_TOKEN")
    code, text = cli(
        "agent", "revoke", agent_id, "--budget", "agent-llm-spend", "--db", str(api.db)
    )
    assert code == 0, text
    status, body, _ = handshake(api, new_token)
    assert status == 401
    assert "revoked" in body["error"]["message"]
    account = api.account(agent_id)
    assert (account.balance, account.leased_out) == (100, 0)


def test_what_was_spent_before_a_rotation_or_revocation_is_counted_late_and_nothing_after(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """Once the new token's reports on a rotated lease were counted whenever the call was
    made, and a revoked runtime's queued spending was never counted."""
    agent_id, token = agent
    first = handshake(api, token)[1]["lease_id"]
    before = int(time.time())
    code, text = cli("agent", "rotate", agent_id, "--budget", BUDGET, "--db", str(api.db))
    assert code == 0, text
    new_token = dict(line.split(": ", 1) for line in text.splitlines())["token"]
    after = int(time.time()) + 60
    for who in (token, new_token):
        status, body, _ = api.call(
            "POST", "/budget/report", report(first, (1, 2), stamped=after), token=who
        )
        assert (status, body["error"]["code"]) == (409, "LEASE_CLOSED"), body
        assert "only calls made before the close" in body["error"]["message"]
    status, body, text = api.call(
        "POST", "/budget/report", report(first, (1, 0.5), stamped=before), token=token
    )
    assert status == 200, text
    assert '"late":0.50' in text
    status, body, text = api.call(
        "POST", "/budget/report", report(first, (2, 0.25), stamped=before), token=new_token
    )
    assert (status, body["accepted"]) == (200, 1), text
    second = handshake(api, new_token)[1]["lease_id"]
    queued = report(second, (1, 1), (2, 0.5), stamped=int(time.time()))
    code, text = cli("agent", "revoke", agent_id, "--budget", BUDGET, "--db", str(api.db))
    assert code == 0, text
    status, body, text = api.call("POST", "/budget/report", queued, token=new_token)
    assert (status, body["accepted"]) == (200, 2), text
    assert '"late":1.50' in text
    status, body, _ = api.call(
        "POST", "/budget/report", report(second, (3, 1), stamped=after), token=new_token
    )
    assert (status, body["error"]["code"]) == (409, "LEASE_CLOSED")
    assert handshake(api, new_token)[0] == 401
    hold = api.account(agent_id).leases[second]
    assert (hold.state, hold.spent, hold.late_spent) == ("revoked", Decimal("1.5"), Decimal("1.5"))
    account = api.account(agent_id)
    assert (account.spent, account.balance, account.leased_out) == (
        Decimal("2.25"),
        Decimal("97.75"),
        0,
    )
    assert [entry.key for entry in api.budget().status.entries[-1:]] == [f"{second}:late"]


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (-1, "'-1' is not an amount"),
        (0, "must be above 0"),
        (1000.01, "at most 1000 USD, not 1000.01"),
        (10.0000001, "at most 6 decimals"),
        ("10.00", "must be a number of USD"),
        (True, "must be a number of USD"),
    ],
)
def test_bad_amounts_are_refused_and_charge_nothing(
    api: LeaseApi, agent: tuple[str, str], amount: Any, message: str
) -> None:
    agent_id, token = agent
    status, body, text = handshake(api, token, amount)
    assert status == 400, text
    assert body["error"]["code"] == "INVALID_REQUEST"
    assert "requested_budget" in body["error"]["message"]
    assert message in body["error"]["message"]
    assert api.account(agent_id).balance == 100


def test_nan_and_seven_decimal_costs_are_refused_in_reports(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    nan = json.dumps(report(lease_id, (1, 1))).replace('"cost_usd": 1', '"cost_usd": NaN')
    status, body, _ = api.call("POST", "/budget/report", token=token, raw=nan.encode())
    assert status == 400
    assert "NaN is not a number JSON allows" in body["error"]["message"]
    for cost in ("0.0000001", "-0.01"):
        raw = json.dumps(report(lease_id, (1, 7))).replace('"cost_usd": 7', f'"cost_usd": {cost}')
        status, body, _ = api.call("POST", "/budget/report", token=token, raw=raw.encode())
        assert status == 400
        assert "reports.0.cost_usd" in body["error"]["message"]
    assert api.account(agent_id).spent == 0


def test_sub_cent_costs_are_counted_exactly_and_the_ledger_reads_back(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """The protocol's own example, `"cost_usd": 0.0457`, was refused."""
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    costs = ("0.0457", "0.010", "0.000001")
    raw = json.dumps(report(lease_id, *((n, 7) for n in range(1, 4))))
    for cost in costs:
        raw = raw.replace('"cost_usd": 7', f'"cost_usd": {cost}', 1)
    status, body, text = api.call("POST", "/budget/report", token=token, raw=raw.encode())
    assert (status, body["accepted"]) == (200, 3), text
    assert '"spent":0.055701' in text
    assert '"remaining":9.944299' in text
    view = api.call("GET", f"/budget/leases/{lease_id}", token=token)[2]
    assert '"spent":0.055701' in view
    status, body, text = api.call("POST", "/budget/release", {"lease_id": lease_id}, token=token)
    assert '"returned":9.944299' in text
    account = api.account(agent_id)
    assert (account.spent, account.balance, account.leased_out) == (
        Decimal("0.055701"), Decimal("99.944299"), 0,
    )  # fmt: skip
    assert handshake(api, token)[0] == 200
    code, text = cli("status", "--db", str(api.db))
    assert code == 0, text


def test_another_agents_lease_unknown_leases_and_order(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    _, token = agent
    other_id, other_token = create_agent(api.db)
    lease_id = handshake(api, token)[1]["lease_id"]
    status, body, _ = api.call(
        "POST", "/budget/report", report(lease_id, (1, 1)), token=other_token
    )  # another agent's lease: not found for this one, and nothing says it exists
    assert (status, body["error"]["code"]) == (404, "LEASE_NOT_FOUND")
    assert body["error"]["message"] == (
        f"{other_id} holds no lease {lease_id} (never granted to it, or closed long ago)"
    )
    unknown = "lease_00000000-0000-0000-0000-000000000000"
    status, body, _ = api.call("POST", "/budget/report", report(unknown, (1, 1)), token=token)
    assert (status, body["error"]["code"]) == (404, "LEASE_NOT_FOUND")
    status, body, _ = api.call("POST", "/budget/report", report(lease_id, (2000, 1)), token=token)
    assert (status, body["error"]["code"]) == (409, "REPORT_OUT_OF_ORDER")
    status, body, _ = api.call("GET", "/budget/leases/lease_bad", token=token)
    assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST")
    refresh = {"lease_id": lease_id, "budget_id": claims_of(other_token)["budget_id"],
               "requested_budget": 1, "current_remaining": 0, "total_spent": 0}  # fmt: skip
    status, body, _ = api.call("POST", "/budget/refresh", refresh, token=token)
    assert (status, body["error"]["code"]) == (403, "LEASE_FORBIDDEN")
    assert api.account(other_id).spent == 0


def test_what_is_not_a_request_gets_the_protocols_error_format(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    big = b'{"lease_id": "' + b"x" * (1024 * 1024) + b'"}'
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"raw": big}, 413, "PAYLOAD_TOO_LARGE"),
        ({"raw": b"{not json"}, 400, "INVALID_REQUEST"),
        ({"raw": b"[1, 2]"}, 400, "INVALID_REQUEST"),
        ({"raw": b"[" * 100_000}, 400, "INVALID_REQUEST"),
        ({"raw": b'{"lease_id": 1' + b"0" * 5000 + b"}"}, 400, "INVALID_REQUEST"),
        ({"headers": {"Content-Type": "text/plain"}, "raw": b"{}"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            {"headers": {"Content-Encoding": "gzip"}, "raw": gzip.compress(b"{}")},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ]
    for extra, status, code in cases:
        got, body, text = api.call("POST", "/budget/report", token=token, **extra)
        assert (got, body["error"]["code"]) == (status, code), text
    assert api.call("GET", "/budget/report", token=token)[1]["error"]["code"] == (
        "METHOD_NOT_ALLOWED"
    )
    assert api.call("GET", "/nowhere")[1]["error"]["code"] == "NOT_FOUND"
    assert api.account(agent_id).spent == 0
    assert api.call("POST", "/budget/report", report(lease_id, (1, 1)), token=token)[0] == 200


def test_a_missing_provider_key_fails_the_handshake_and_lends_nothing(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    (api.db.with_name(api.db.name + ".secrets") / "openai" / "api-key").unlink()
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (503, "HANDSHAKE_FAILED")
    assert "Secret openai (key api-key)" in body["error"]["message"]
    assert api.account(agent_id).leased_out == 0


def test_an_exhausted_budget_leases_nothing(api: LeaseApi, agent: tuple[str, str]) -> None:
    _agent_id, token = agent
    lease_id = handshake(api, token, 100)[1]["lease_id"]
    api.call("POST", "/budget/report", report(lease_id, (1, 100)), token=token)
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (403, "BUDGET_EXCEEDED")
    assert "100.00 USD is spent and 0.00 USD is leased out" in body["error"]["message"]


def test_budget_exceeded_says_what_is_spent_and_what_is_leased_out(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """Once a budget leased out to open leases was said to be "spent"."""
    _, token = agent
    handshake(api, token, 100)
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (403, "BUDGET_EXCEEDED")
    assert "0.00 USD is spent and 100.00 USD is leased out" in body["error"]["message"]


def test_the_openapi_document_names_every_route_and_error_code(api: LeaseApi) -> None:
    status, document, _ = api.call("GET", "/openapi.json")
    assert status == 200
    assert set(document["paths"]) == {
        "/auth/handshake", "/budget/report", "/budget/refresh", "/budget/release",
        "/budget/leases/{lease_id}",
    }  # fmt: skip
    assert set(document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
               ["code"]["enum"]) == set(ERRORS)  # fmt: skip
    documented = Path(__file__).parents[2] / "docs" / "lease-api.md"
    for code in ERRORS:
        assert f"`{code}`" in documented.read_text(), code


def test_an_unreadable_signing_key_is_a_retryable_answer(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    agent_id, token = agent
    path = api.db.with_name(api.db.name + ".secrets") / "budgetops-agent-signing-key" / "key"
    path.write_text("not hex")
    status, body, _ = handshake(api, token)
    assert (status, body["error"]["code"]) == (503, "UNAVAILABLE")
    assert "signing key cannot be read" in body["error"]["message"]
    assert api.account(agent_id).leased_out == 0


def test_a_full_batch_arrives_whole_and_counts_every_record(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """A body larger than one read (here ~170 kB) was once read only in part."""
    agent_id, token = agent
    lease_id = handshake(api, token, 100)[1]["lease_id"]
    batch = report(lease_id, *((n, 0.01) for n in range(1, 1001)))
    status, body, text = api.call("POST", "/budget/report", batch, token=token)
    assert status == 200, text[:300]
    assert (body["accepted"], api.account(agent_id).spent) == (1000, 10)
    too_many = report(lease_id, *((n, 0.01) for n in range(1, 1002)))
    status, body, _ = api.call("POST", "/budget/report", too_many, token=token)
    assert status == 400
    assert "at most 1000" in body["error"]["message"]


def unnumbered(lease_id: str, request_id: str, cost: Any) -> dict[str, Any]:
    record = report(lease_id, (1, cost))["reports"][0]
    del record["seq"]
    return record | {"lease_id": lease_id, "request_id": request_id}


def test_an_unnumbered_report_is_counted_once_however_late_its_replay(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """Once only the latest 64 request ids were kept: a replay after 70 others counted again."""
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    batch = {"lease_id": lease_id, "reports": [
        {k: v for k, v in unnumbered(lease_id, f"other_{n}", 0).items() if k != "lease_id"}
        for n in range(70)
    ]}  # fmt: skip
    for body in (unnumbered(lease_id, "first", 0.02), batch, unnumbered(lease_id, "first", 0.02)):
        status, _, text = api.call("POST", "/budget/report", body, token=token)
        assert status == 200, text
    assert api.account(agent_id).spent == Decimal("0.02")


def test_a_record_sent_again_with_another_cost_is_a_conflict(
    api: LeaseApi, agent: tuple[str, str]
) -> None:
    """Once answered "duplicate", silently dropping the new cost."""
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    assert api.call("POST", "/budget/report", report(lease_id, (1, 0.5)), token=token)[0] == 200
    for body in (report(lease_id, (1, 0.75), (2, 1)), unnumbered(lease_id, "x", 1)):
        api.call("POST", "/budget/report", unnumbered(lease_id, "x", 0.25), token=token)
        status, answer, _ = api.call("POST", "/budget/report", body, token=token)
        assert (status, answer["error"]["code"]) == (409, "REPORT_CONFLICT")
        assert "was counted with a cost of" in answer["error"]["message"]
    assert api.account(agent_id).spent == Decimal("0.75")


def test_closed_leases_do_not_limit_new_ones(
    api: LeaseApi, agent: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once closed leases counted against the cap for their ttl: a runtime refreshing below
    its threshold was refused TOO_MANY_LEASES with money unspent."""
    monkeypatch.setattr(leases, "LEASES_KEPT", 3)
    agent_id, token = agent
    budget_id = claims_of(token)["budget_id"]
    lease_id = handshake(api, token, 1)[1]["lease_id"]
    for _ in range(5):
        ask = {"lease_id": lease_id, "budget_id": budget_id, "requested_budget": 1,
               "current_remaining": 0, "total_spent": 0}  # fmt: skip
        status, body, text = api.call("POST", "/budget/refresh", ask, token=token)
        assert (status, body["status"]) == (200, "approved"), text
        api.call("POST", "/budget/release", {"lease_id": lease_id}, token=token)
        lease_id = body["lease_id"]
    for _ in range(2):
        assert handshake(api, token, 1)[0] == 200
    status, body, _ = handshake(api, token, 1)
    assert (status, body["error"]["code"]) == (409, "TOO_MANY_LEASES")
    assert "3 open leases" in body["error"]["message"]
    assert api.account(agent_id).leased_out == 3


PLACED = 7777
"""Where a test puts the number it tries: replaced in the JSON text, so any spelling is sent."""


@pytest.mark.parametrize(
    "number", ["1e309", "1" * 30, "1e-400", "9" * 400, "1.0e1000000", "0.0000001", "-1"]
)
@pytest.mark.parametrize(
    "field",
    ["cost_usd", "tokens", "seq", "timestamp", "requested_budget", "current_remaining",
     "total_spent"],
)  # fmt: skip
def test_numbers_past_any_bound_are_a_400_and_charge_nothing(
    api: LeaseApi, agent: tuple[str, str], field: str, number: str
) -> None:
    """Once numbers too large for the decimal context answered 500."""
    agent_id, token = agent
    lease_id = handshake(api, token)[1]["lease_id"]
    record = report(lease_id, (1, 1))["reports"][0]
    refresh = {"lease_id": lease_id, "budget_id": claims_of(token)["budget_id"],
               "requested_budget": 1, "current_remaining": 1, "total_spent": 0}  # fmt: skip
    hello = {"ic_token": token, "requested_budget": 1, "runtime_version": "0.1.0"}
    path, body = {
        **{name: ("/budget/report", {"lease_id": lease_id, "reports": [record]})
           for name in ("cost_usd", "tokens", "seq", "timestamp")},
        "requested_budget": ("/auth/handshake", hello),
        "current_remaining": ("/budget/refresh", refresh),
        "total_spent": ("/budget/refresh", refresh),
    }[field]  # fmt: skip
    target = body["reports"][0] if path == "/budget/report" else body
    target[field] = PLACED
    text = json.dumps(body).replace(str(PLACED), number)
    status, answer, _ = api.call("POST", path, token=token, raw=text.encode())
    assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST"), answer
    assert field in answer["error"]["message"]
    account = api.account(agent_id)
    assert (account.spent, account.leased_out, account.balance) == (0, 10, 90)
