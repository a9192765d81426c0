"""The unknowns budget end to end on one machine: the window's tally in status, metrics and
`status --service`; `check` / `consume --unknowns` read and decide as the webhook does, and
their verdict carries the counts that were sent. (Through the real API server:
tests/cluster/test_unknowns_incluster.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import Admission
from budgetops.apis.numbers import REASONS_MAX, NumberError, counts
from budgetops.apis.resources import BudgetKey, RiskBudget
from budgetops.apis.riskbudget import OTHER_REASONS
from budgetops.cli.budgets import EXIT_DENIED
from budgetops.engine.unknowns import UnknownCounts
from budgetops.observability.metrics import BudgetCollector
from budgetops.store.sqlite import SQLiteStore
from tests.conftest import EXAMPLES

from .test_admission import DEPLOYMENTS, NOW, deployment, request
from .test_cli import run
from .test_decisions import release, risk_budget, ship

LIMITS = {
    "maxUnknownCount": 4,
    "maxCumulativeUncertainty": "2.00",
    "reasonLimits": {"Reachability": 3},
    "action": "block",
}
KEY = BudgetKey("RiskBudget", "payments-api", "payments")


def unknowns(uncertainty: str = "0", **by_reason: int) -> UnknownCounts:
    return UnknownCounts(by_reason=by_reason, cumulative_uncertainty=Decimal(uncertainty))


# The window's tally.


def test_the_tally_counts_what_shipped_what_passed_a_limit_and_what_was_blocked() -> None:
    budget = risk_budget(unknowns=LIMITS)
    assert ship(budget, release("v1", 5, unknowns=unknowns("0.5", Reachability=2))).allowed
    assert ship(budget, release("v2", 5, unknowns=unknowns(Identity=1, Reachability=1))).allowed
    assert ship(budget, release("v0", 5, unknowns=unknowns())).allowed, "none reported"
    blocked = ship(budget, release("v3", 5, unknowns=unknowns(Reachability=4)))
    assert (blocked.allowed, blocked.reason) == (False, "UnknownsExceeded")
    assert not ship(
        budget, release("v4", 5, unknowns=unknowns(Reachability=9)), dry_run=True
    ).allowed
    assert ship(budget, release("v1", 5, unknowns=unknowns("0.5", Reachability=2))).reason == (
        "AlreadyCharged"
    )
    tally = budget.status.unknowns
    assert (tally.releases, tally.total, tally.cumulative_uncertainty) == (2, 4, Decimal("0.5"))
    assert tally.by_reason == {"Reachability": 3, "Identity": 1}
    assert (tally.warned, tally.blocked) == (0, 1), "the dry run and the replay count nothing"

    warning = risk_budget(unknowns={**LIMITS, "action": "warn"})
    passed = ship(warning, release("v3", 5, unknowns=unknowns(Reachability=4)))
    assert passed.allowed
    assert (warning.status.unknowns.warned, warning.status.unknowns.total) == (1, 4)
    shadow = risk_budget(unknowns=LIMITS, enforcement="warn")
    assert ship(shadow, release("v3", 5, unknowns=unknowns(Reachability=4))).reason == "Warned"
    assert (shadow.status.unknowns.warned, shadow.status.unknowns.blocked) == (1, 0)


def test_reasons_past_the_bound_are_tallied_together() -> None:
    budget = risk_budget()
    for n in range(REASONS_MAX + 3):
        assert ship(budget, release(f"v{n}", 0, unknowns=unknowns(**{f"r{n}": 1}))).allowed
    tally = budget.status.unknowns
    assert len(tally.by_reason) == REASONS_MAX + 1
    assert tally.by_reason[OTHER_REASONS] == 3
    assert tally.total == REASONS_MAX + 3
    wire = budget.model_dump(mode="json", by_alias=True)
    assert RiskBudget.model_validate(wire).status.unknowns == tally, "it reads back"


def test_a_closed_window_keeps_its_tally_and_the_next_starts_empty() -> None:
    budget = risk_budget(unknowns=LIMITS)
    ship(budget, release("v1", 5, unknowns=unknowns(Reachability=2)))
    ship(budget, release("v2", 5), now=NOW + timedelta(days=40))
    assert budget.status.unknowns.total == 0
    assert [h.unknowns.total for h in budget.status.history] == [2]


# Reading the counts: one parser for the annotation and the flag.


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '{"Reachability": -1}',
        '{"Reachability": 1000001}',
        '{"Reachability": true}',
        '{"": 1}',
        '{"' + "R" * 64 + '": 1}',
        '{"Reach\\u202eability": 1}',
        json.dumps({f"r{n}": 1 for n in range(REASONS_MAX + 1)}),
    ],
)
def test_counts_out_of_bounds_are_refused_alike_by_the_annotation_and_the_flag(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NumberError) as refused:
        counts(text)
    message = str(refused.value)
    assert message.startswith("must be a JSON object of counts")

    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    review = request(
        kind="Deployment",
        resource=DEPLOYMENTS,
        namespace="payments",
        obj=deployment(**{"budgetops.dev/unknowns": text}),
    )
    admission = Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))
    answer = asyncio.run(admission.review(json.dumps(review).encode())).body["response"]
    assert answer["status"]["message"] == f"budgetops.dev/unknowns {message}."
    store.close()

    with pytest.raises(SystemExit) as exited:
        run("check", "payments-api", "-n", "payments", "--points", "1", "--unknowns", text)
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith(f"argument --unknowns: {message}")


def test_a_bad_uncertainty_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("consume", "payments-api", "--points", "1", "--uncertainty", "1e1000000")
    assert exited.value.code == 2
    assert "argument --uncertainty: '1e1000000' is not an amount" in capsys.readouterr().err


# The command line decides as the webhook does.


@pytest.fixture
def blocking(tmp_path: Path) -> str:
    """An embedded ledger holding one RiskBudget whose unknowns limits block."""
    path = tmp_path / "ledger.sqlite3"
    manifest = risk_budget(unknowns=LIMITS, selector={"matchLabels": {"app": "api"}})
    (tmp_path / "budget.yaml").write_text(
        yaml.safe_dump(manifest.model_dump(mode="json", by_alias=True, exclude={"status"}))
    )
    assert run("apply", "-f", str(tmp_path / "budget.yaml"), "--db", str(path))[0] == 0
    return str(path)


def _payload(envelope: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return found


def test_check_and_consume_take_unknowns_and_decide_as_the_webhook_does(blocking: str) -> None:
    sent = '{"Reachability": 4, "Identity": 1}'
    store = SQLiteStore(Path(blocking).with_name("webhook.sqlite3"))
    store.apply(risk_budget(unknowns=LIMITS, selector={"matchLabels": {"app": "api"}}))
    review = request(
        kind="Deployment",
        resource=DEPLOYMENTS,
        namespace="payments",
        obj=deployment(**{"budgetops.dev/unknowns": sent, "budgetops.dev/uncertainty": "0.5"}),
    )
    admission = Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))
    webhook = asyncio.run(admission.review(json.dumps(review).encode())).body["response"]
    assert not webhook["allowed"]
    why = webhook["status"]["message"].split("for payments-api: ", 1)[1]
    assert why == (
        "unknowns in total: 5 exceeds the limit of 4; "
        "unknowns for reason Reachability: 4 exceeds the limit of 3."
    )
    store.close()

    flags = ("--points", "1", "--unknowns", sent, "--uncertainty", "0.5", "--db", blocking)
    code, out = run("check", "payments-api", "-n", "payments", *flags)
    assert code == EXIT_DENIED
    assert out.startswith("may ship: no\n")
    assert out.rstrip().endswith(why)
    code, envelope = run("check", "payments-api", "-n", "payments", *flags, "-o", "json")
    assert code == EXIT_DENIED
    check = _payload(envelope)["predicate"]["budgetCheck"]
    assert check["actualCounts"] == {
        "total": 5,
        "cumulativeUncertainty": "0.50",
        "byReason": {"Identity": 1, "Reachability": 4},
    }
    assert check["result"] == "fail"
    code, out = run("consume", "payments-api", "-n", "payments", *flags, "--release-id", "v1")
    assert (code, out.rstrip().endswith(why)) == (EXIT_DENIED, True)

    allowed = ("--unknowns", '{"Reachability": 2}', "--release-id", "v2", "--db", blocking)
    code, out = run("consume", "payments-api", "-n", "payments", "--points", "5", *allowed)
    assert code == 0, out
    code, out = run("status", "--service", "payments-api", "--db", blocking)
    assert "Unknowns: 2 in 1 releases (Reachability 2), uncertainty 0; " in out
    assert "0 let through past a limit, 1 blocked" in out
    code, shown = run("status", "--service", "payments-api", "--db", blocking, "-o", "json")
    assert json.loads(shown)[0]["unknowns"]["byReason"] == {"Reachability": 2}

    store = SQLiteStore(blocking)
    registry = CollectorRegistry()
    registry.register(BudgetCollector(store))
    where = {"kind": "RiskBudget", "namespace": "payments", "name": "payments-api"}
    assert registry.get_sample_value("budgetops_risk_unknowns", where) == 2
    for outcome, count in (("reported", 1), ("warned", 0), ("blocked", 1)):
        labels = where | {"outcome": outcome}
        assert registry.get_sample_value("budgetops_risk_unknowns_releases", labels) == count
    store.close()


def test_a_release_past_an_unknowns_limit_that_warns_has_a_warn_verdict(tmp_path: Path) -> None:
    """It was `pass`: the verdict's result looked at the decision's reason only."""
    path = str(tmp_path / "ledger.sqlite3")
    assert run("apply", "-f", str(EXAMPLES / "riskbudget-payments.yaml"), "--db", path)[0] == 0
    flags = ("--points", "1", "--unknowns", '{"Reachability": 6}', "--db", path, "-o", "json")
    code, envelope = run("check", "payments-api", "-n", "payments", *flags)
    assert code == 0
    check = _payload(envelope)["predicate"]["budgetCheck"]
    assert (check["result"], check["actualCounts"]["byReason"]) == ("warn", {"Reachability": 6})
