"""Numbers from outside: bounded where they are read, stored in the form the ledger reads back.

Each case here once passed as a number and then froze the webhook (a million-digit integer
made from `1e1000000`), answered 500, granted break-glass, or took a budget down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.common import format_amount, parse_amount
from budgetops.apis.leaseprotocol import HandshakeRequest, ReportRequest
from budgetops.apis.ledger import Ledger
from budgetops.apis.numbers import NumberError, amount, show, whole
from budgetops.apis.resources import BudgetKey
from budgetops.store.sqlite import SQLiteStore
from tests.leases import LeaseApi, create_agent, handshake, lease_api

from .test_admission import (
    DEPLOYMENTS,
    NOW,
    admitting,
    break_glass_budget,
    deployment,
    post,
    request,
)
from .test_cli import run
from .test_decisions import risk_budget

OUTSIDE = [
    "1e1000000",
    "1E+2",
    "9" * 5000,
    "0." + "0" * 4999 + "1",
    "NaN",
    "Infinity",
    "-1",
    "+1",
    "1_000",
    "1 000",
    "١٢",
    "\uff11",  # a full-width one
    "0.0000001",
    "1000000000000000",
    "",
]


@pytest.mark.parametrize("text", OUTSIDE)
def test_amounts_outside_the_bounds_are_refused_as_text(text: str) -> None:
    with pytest.raises(NumberError, match="is not an amount"):
        amount(text)


@pytest.mark.parametrize(
    "value",
    [Decimal("1E+1000000"), Decimal("1E+2"), Decimal("1E-400"), Decimal("NaN"), Decimal(-1),
     Decimal("1." + "0" * 60 + "1"), 10**30, -1, 10**5000],
    ids=lambda value: f"{type(value).__name__}-{hash(value) % 1000}",
)  # fmt: skip
def test_amounts_outside_the_bounds_are_refused_as_numbers(value: object) -> None:
    with pytest.raises(NumberError, match="is not an amount"):
        amount(value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("0.0457", "0.0457"),
        ("10.50", "10.50"),
        (Decimal("0.010"), "0.01"),
        (Decimal("0.0100000"), "0.01"),
        (Decimal("-0"), "0"),
        (7, "7"),
        (" 000999999999999999.999999 ", "999999999999999.999999"),
    ],
)
def test_amounts_are_read_in_the_form_the_ledger_writes(value: object, stored: str) -> None:
    assert str(amount(value)) == stored
    entry = {"at": "2026-01-01T00:00:00Z", "account": "a", "action": "lease-spend"}
    ledger = Ledger.model_validate({"entries": [entry | {"amount": amount(value)}]})
    wire = ledger.to_wire()
    assert Ledger.model_validate(wire).to_wire() == wire, "what is written reads back"


def test_sub_cent_amounts_show_to_the_cent_or_exactly_never_rounded() -> None:
    assert [show(Decimal(v), "USD") for v in ("10", "0.5", "0.0457", "9.954300")] == [
        "10.00",
        "0.50",
        "0.0457",
        "9.9543",
    ]
    assert [format_amount(Decimal(v)) for v in ("10.00", "0.50", "0.0457")] == [
        10,
        "0.50",
        "0.0457",
    ]


@pytest.mark.parametrize("text", ["١٢", "1_0", "+5", "5 5", "5\u00a0", "0x10", "1e3", "9" * 5000])
def test_whole_numbers_are_ascii_digits_only(text: str) -> None:
    with pytest.raises(NumberError, match="must be a whole number of risk points"):
        whole(text, low=0, high=100_000, of="risk points")
    assert whole(" 25 ", low=0, high=100_000) == 25


# The lease protocol: numbers too large for the decimal context were a 500; sub-cent costs
# were refused, and a cost of 0.010 was stored with three places the ledger could not read.


def test_protocol_numbers_past_the_bounds_are_validation_errors() -> None:
    record = {"request_id": "r", "tokens": 1, "model": "m", "provider": "p", "timestamp": 1}
    for cost in (Decimal("1E+309"), 10**30, Decimal("1E+1000000"), Decimal("0.0000001")):
        with pytest.raises(ValidationError, match="cost_usd"):
            ReportRequest.model_validate({"lease_id": "x", **record, "cost_usd": cost})
    hello = {"ic_token": "t", "runtime_version": "0.1.0"}
    with pytest.raises(ValidationError, match="requested_budget"):
        HandshakeRequest.model_validate({**hello, "requested_budget": 10**30})
    lease = "lease_00000000-0000-0000-0000-000000000000"
    read = ReportRequest.model_validate(
        {"lease_id": lease, **record, "cost_usd": Decimal("0.0457")}
    )
    assert read.reports[0].cost_usd == Decimal("0.0457")


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with lease_api(tmp_path) as served:
        yield served


def _report(api: LeaseApi, token: str, lease_id: str, seq: int, cost: str) -> tuple[int, Any]:
    record = {"request_id": f"req_{seq}", "seq": seq, "tokens": 100, "cost_usd": "COST",
              "model": "gpt-4", "provider": "openai", "timestamp": 1764757845}  # fmt: skip
    raw = json.dumps({"lease_id": lease_id, **record}).replace('"COST"', cost).encode()
    status, body, _ = api.call("POST", "/budget/report", token=token, raw=raw)
    return status, body


def test_sub_cent_reports_are_counted_exactly_and_the_budget_stays_readable(api: LeaseApi) -> None:
    agent_id, token = create_agent(api.db)
    status, body, text = handshake(api, token)
    assert status == 200, text
    lease_id = body["lease_id"]
    assert _report(api, token, lease_id, 1, "0.010")[0] == 200
    assert _report(api, token, lease_id, 2, "0.0457")[0] == 200, "the protocol's own example"
    assert _report(api, token, lease_id, 3, "0.0000001")[0] == 400
    account = api.account(agent_id)
    assert account.spent == Decimal("0.0557")
    assert account.balance + account.spent + account.leased_out == account.allocation
    reopened = SQLiteStore(api.db)
    try:
        assert reopened.get(BudgetKey("TrustBudget", "agent-llm-spend")).status.accounts
    finally:
        reopened.close()
    status, body, text = handshake(api, token)
    assert status == 200, "the budget still answers: " + text


# Admission: the annotations a workload carries, and a certificate's stated lifetime.


def _release(**annotations: str) -> bytes:
    review = request(
        kind="Deployment", resource=DEPLOYMENTS, namespace="payments", obj=deployment(**annotations)
    )
    return json.dumps(review).encode()


def test_an_uncertainty_of_1e1000000_is_denied_at_once(tmp_path: Path) -> None:
    """It froze the event loop for ~29 s; `post` gives up after 10 s, so a freeze fails."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    server = serve(admitting(store), host="127.0.0.1", port=0, tls=None)
    webhook = ("127.0.0.1", server.port, store)
    try:
        status, body = post(webhook, _release(**{"budgetops.dev/uncertainty": "1e1000000"}))
        assert status == 200
        answer = body["response"]
        assert (answer["allowed"], answer["status"]["code"]) == (False, 400)
        assert "budgetops.dev/uncertainty must be a non-negative" in answer["status"]["message"]
        status, body = post(webhook, _release(**{"budgetops.dev/risk-points": "5"}))
        assert body["response"]["allowed"], "and the webhook still answers"
    finally:
        server.close()
        store.close()


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"budgetops.dev/uncertainty": "9" * 5000}, "budgetops.dev/uncertainty must be"),
        ({"budgetops.dev/uncertainty": "1E+2"}, "budgetops.dev/uncertainty must be"),
        ({"budgetops.dev/unknowns": '{"a": ' + "9" * 5000 + "}"}, "must be a JSON object"),
        ({"budgetops.dev/unknowns": '{"a": 99999999999}'}, "must be a JSON object"),
        ({"budgetops.dev/unknowns": '{"a": ' * 3000 + "1" + "}" * 3000}, "must be a JSON"),
        ({"budgetops.dev/unknowns": '{"a": NaN}'}, "must be a JSON object"),
        ({"budgetops.dev/unknowns": '{"a": 1.0}'}, "must be a JSON object"),
        ({"budgetops.dev/risk-points": "١٢"}, "must be a whole number of risk points"),
        ({"budgetops.dev/risk-points": "1_0"}, "must be a whole number of risk points"),
        ({"budgetops.dev/risk-points": "+5"}, "must be a whole number of risk points"),
        ({"budgetops.dev/risk-points": "5 5"}, "must be a whole number of risk points"),
        ({"budgetops.dev/risk-points": "9" * 5000}, "must be a whole number of risk points"),
    ],
)
def test_numbers_in_release_annotations_are_a_calm_denial(
    tmp_path: Path, annotations: dict[str, str], message: str
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    admission = Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))
    answer = asyncio.run(admission.review(_release(**annotations)))
    assert answer.status == 200
    response = answer.body["response"]
    assert (response["allowed"], response["status"]["code"]) == (False, 400)
    assert message in response["status"]["message"]
    budget = store.get(BudgetKey("RiskBudget", "payments-api", "payments"))
    assert not budget.status.accounts, "nothing charged"
    store.close()


@pytest.mark.parametrize("seconds", ["1e999", "NaN", "-1", "0", "599", str(10**30), '"900"'])
def test_a_break_glass_lifetime_kubernetes_would_not_allow_is_refused(
    tmp_path: Path, seconds: str
) -> None:
    """-1 and 0 passed as short lifetimes and granted break-glass; 10**30 answered 500."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(break_glass_budget(5))
    admission = Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))

    def csr(uid: str, ttl: str) -> dict[str, Any]:
        obj = {
            "metadata": {
                "name": uid,
                "uid": uid,
                "annotations": {"budgetops.dev/break-glass": "x"},
            },
            "spec": {"expirationSeconds": 900},
        }
        review = json.dumps(request(uid=uid, groups=("developers", "oncall"), obj=obj))
        answer = asyncio.run(admission.review(review.replace("900", ttl).encode()))
        assert answer.status == 200
        return dict(answer.body["response"])

    assert csr("spent", "900")["allowed"], "the balance pays for this one"
    refused = csr("glass", seconds)
    assert (refused["allowed"], refused["status"]["code"]) == (False, 400)
    message = refused["status"]["message"]
    if seconds in ("1e999", "NaN"):  # the body's own reader may refuse these first
        assert "expirationSeconds" in message or "cannot read this AdmissionReview" in message
    else:
        assert "spec.expirationSeconds must be a whole number of seconds" in message
    budget = store.get(BudgetKey("TrustBudget", "certs"))
    assert budget.status.break_glass_uses == []
    store.close()


# The command line agrees with the annotations and with --cost.


@pytest.fixture
def db(tmp_path: Path) -> str:
    from tests.conftest import EXAMPLES

    path = str(tmp_path / "ledger.sqlite3")
    assert run("apply", "-f", str(EXAMPLES), "--db", path)[0] == 0
    return path


@pytest.mark.parametrize("points", ["١٢", "1_0", "+5", "5 5", "9" * 5000])
def test_points_flags_take_ascii_digits_only(
    db: str, points: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run("consume", "payments-api", "-n", "payments", "--points", points, "--db", db)
    assert exited.value.code == 2
    assert "--points: must be a whole number of risk points" in capsys.readouterr().err


@pytest.mark.parametrize("release_id", ["", "  "])
def test_an_empty_release_id_is_refused_not_made_fresh(
    db: str, release_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--release-id "$GIT_SHA"` with the variable unset charged again on every retry."""
    with pytest.raises(SystemExit) as exited:
        run("consume", "payments-api", "-n", "payments", "--points", "1",
            "--release-id", release_id, "--db", db)  # fmt: skip
    assert exited.value.code == 2
    assert "--release-id must not be empty" in capsys.readouterr().err


def test_a_sub_cent_cost_is_charged_exactly_from_the_cli(db: str) -> None:
    account = "serviceaccount:payments/agent"
    code, out = run("charge", "agent-llm-spend", "--account", account, "--id", "a",
                    "--cost", "0.0457", "--db", db)  # fmt: skip
    assert code == 0, out
    code, out = run("status", "agent-llm-spend", "-o", "json", "--db", db)
    assert code == 0, out
    [row] = [r for r in json.loads(out) if r.get("account") == account]
    assert Decimal(row["allocated"]) - Decimal(row["balance"]) == Decimal("0.0457")


@pytest.mark.parametrize("port", ["\u0661\u0662", "9" * 5000, "65536"])
def test_a_listen_port_is_ascii_digits_in_range(port: str) -> None:
    from budgetops.cli.commands import _listen

    with pytest.raises(argparse.ArgumentTypeError, match="is not host:port"):
        _listen(f"127.0.0.1:{port}")
    assert _listen("localhost:8443") == "127.0.0.1:8443"


def test_an_allocation_change_reads_a_sign_and_ascii_digits_only() -> None:
    from budgetops.cli.commands import _signed_points

    assert [_signed_points(v) for v in ("+24", "-24", "24")] == [24, -24, 24]
    for text in ("1_0", "\u0661", "+-5", "24 0"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number of points"):
            _signed_points(text)


def test_an_amount_padded_past_the_bound_is_refused_before_it_is_cached() -> None:
    """Surrounding spaces were stripped before the length check, and the padded text was
    the key of the amount cache: a megabyte per entry, 4,096 entries."""
    with pytest.raises(ValueError, match="is not an amount"):
        parse_amount(" " * 1_000_000 + "5")
    assert parse_amount(" 5 ") == 5
