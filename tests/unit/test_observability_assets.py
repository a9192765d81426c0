"""The chart's observability assets: the Prometheus rules and the Grafana dashboard.

Every expression (and every PromQL example in docs/observability.md) is parsed by a real
PromQL parser, and every metric it selects, with every label it matches on, must be one
BudgetOps exports: the registry is assembled the way `budgetops run` assembles it, so
renaming a metric or a label fails here, not in a silent alert. The dashboard is checked the
way Grafana would read it: ids, grid, data source.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from budgetops.apis.ledger import Account
from budgetops.apis.resources import BudgetKey, Kind
from budgetops.apis.trustbudget import Alerts
from budgetops.engine.alerts import account_alerts
from budgetops.engine.bands import BAND_ORDER
from budgetops.engine.decisions import Reason
from budgetops.notify.outbox import NotificationMetrics
from budgetops.observability.metrics import (
    ALERT_KINDS,
    AdmissionMetrics,
    BudgetCollector,
    EventsCollector,
    ReconcileMetrics,
    StoreCollector,
)
from budgetops.store.sqlite import SQLiteStore
from tests.charges import charging
from tests.conftest import ROOT

from .test_decisions import risk_budget, trust_budget

RULES = ROOT / "charts" / "budgetops" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "budgetops" / "files" / "dashboard.json"
DOC = ROOT / "docs" / "observability.md"

ALERTS = {
    "BudgetOpsTrustBudgetLow",
    "BudgetOpsTrustBudgetExhausted",
    "BudgetOpsTrustBudgetRapidDepletion",
    "BudgetOpsRiskBudgetLow",
    "BudgetOpsRiskBudgetExhausted",
    "BudgetOpsRiskBudgetRapidDepletion",
    "BudgetOpsBreakGlassUsed",
    "BudgetOpsWebhookLatencyHigh",
    "BudgetOpsWebhookErrorRateHigh",
    "BudgetOpsNotificationsFailing",
    "BudgetOpsNotificationsDropped",
    "BudgetOpsNotReconciling",
}
"""The runbook in docs/operations.md has an anchor per name: renaming one is a docs change."""

GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "budget": ".*"}
"""What a variable stands for when an expression is parsed (Grafana substitutes them)."""

VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

LABEL_VALUES: dict[str, set[str]] = {
    "reason": {*get_args(Reason), "Timeout", "Refused"},  # the last two: admission/webhook.py
    "decision": {"allowed", "denied"},
    "kind": set(get_args(Kind)),
    "band": set(BAND_ORDER),
    "alert": set(ALERT_KINDS),
}
"""Label values the code writes, for the labels expressions match exactly."""

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass
class Dropped:
    dropped: int = 0


def _suffixed(family: str, kind: str) -> set[str]:
    """The sample names prometheus_client writes for a family of this type, when it has
    nothing to write yet."""
    if kind == "counter":
        return {f"{family}_total"}
    if kind == "histogram":
        return {f"{family}_{end}" for end in ("bucket", "count", "sum")}
    return {family}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str] | None]:
    """Sample name -> its label names (None: no sample to read them from), scraped from a
    registry built like `budgetops run` builds it, over a ledger holding both budget kinds."""
    store = SQLiteStore(tmp_path_factory.mktemp("metrics") / "ledger.sqlite3")
    key = BudgetKey.of(store.apply(trust_budget()))
    store.apply(risk_budget())

    store.update_status(key, charging("uid-1", ref="", now=NOW))
    registry = CollectorRegistry()
    registry.register(StoreCollector(store.commits.stats))
    registry.register(BudgetCollector(store))
    registry.register(EventsCollector(Dropped()))
    admission = AdmissionMetrics(registry)
    reconcile = ReconcileMetrics(registry)
    notifications = NotificationMetrics(registry)
    # labelled metrics write nothing before their first child: make one of each
    admission.admissions.labels("TrustBudget", "allowed", "BreakGlass").inc()
    admission.latency.observe(0.01)
    admission.errors.labels("500").inc()
    reconcile.transitions.labels("TrustBudget", "LowBalance").inc()
    reconcile.reservations.labels("TrustBudget", "confirmed").inc()
    reconcile.failures.labels("TrustBudget").inc()
    for counter in (notifications.delivered, notifications.failures, notifications.dropped):
        counter.labels("webhook").inc()
    labels: dict[str, set[str]] = {}
    names: set[str] = set()
    for family in registry.collect():
        if not family.samples:
            names |= _suffixed(family.name, family.type)
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    store.close()
    return {name: labels.get(name) for name in names | set(labels)}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _substituted(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return VARIABLE.sub(value, expr)


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _examples() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule, every dashboard target (variables substituted) and
    every example in the docs."""
    rules = [(f"alert {r['alert']}", r["expr"]) for r in _rules()]
    panels = [(f"panel {title!r}", _substituted(t["expr"])) for title, t in _targets()]
    examples = [(f"docs example {n}", e) for n, e in enumerate(_examples(), start=1)]
    return rules + panels + examples


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


# Rules ------------------------------------------------------------------------------------


def test_the_rules_file_is_the_spec_of_a_prometheus_rule() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    groups = document["groups"]
    assert groups
    assert all(set(g) == {"name", "rules"} and g["rules"] for g in groups)
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))


def test_every_rule_is_an_alert_with_what_routing_and_runbooks_need() -> None:
    for rule in _rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        name = rule["alert"]
        assert re.fullmatch(r"BudgetOps[A-Z][A-Za-z]+", name), name
        assert promql_parser.parse_duration(rule["for"]) <= timedelta(minutes=30), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        assert annotations["summary"].strip(), name
        assert f"docs/operations.md#{name.lower()}" in annotations["description"], name


def test_alert_names_are_unique_and_cover_operational_visibility() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert len(names) == len(set(names))
    assert set(names) == ALERTS


def test_exhaustion_pages_and_a_low_balance_warns() -> None:
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in _rules()}
    assert severity["BudgetOpsTrustBudgetExhausted"] == "critical"
    assert severity["BudgetOpsRiskBudgetExhausted"] == "critical"
    assert severity["BudgetOpsTrustBudgetLow"] == "warning"


# Expressions ------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "expr"), _exprs())
def test_every_expression_is_promql(where: str, expr: str) -> None:
    try:
        promql_parser.parse(expr)
    except ValueError as error:
        pytest.fail(f"{where}: {error}\n{expr}")


@pytest.mark.parametrize(("where", "expr"), _exprs())
def test_every_metric_and_label_an_expression_selects_is_exported(
    where: str, expr: str, exported: dict[str, set[str] | None]
) -> None:
    for selector in _selectors(expr):
        name = selector.name
        assert name in exported, f"{where}: BudgetOps exports no {name}"
        labels = exported[name]
        for matcher in selector.matchers.matchers:
            if labels is not None:
                assert matcher.name in labels, f"{where}: {name} has no label {matcher.name}"
            if matcher.op == promql_parser.MatchOp.Equal and matcher.name in LABEL_VALUES:
                known = LABEL_VALUES[matcher.name]
                assert matcher.value in known, f"{where}: {matcher} is never written"


def test_alerts_select_the_metrics_each_concern_is_read_from() -> None:
    """Low balance, exhaustion, rapid depletion, break-glass, notifications, the webhook."""
    used = {rule["alert"]: {s.name for s in _selectors(rule["expr"])} for rule in _rules()}
    assert "budgetops_trust_alerting_accounts" in used["BudgetOpsTrustBudgetLow"]
    assert used["BudgetOpsTrustBudgetExhausted"] == {"budgetops_trust_exhausted_accounts"}
    assert used["BudgetOpsRiskBudgetExhausted"] == {"budgetops_risk_band"}
    assert used["BudgetOpsBreakGlassUsed"] == {"budgetops_admissions_total"}
    assert used["BudgetOpsNotificationsFailing"] == {"budgetops_notification_failures_total"}
    assert used["BudgetOpsWebhookLatencyHigh"] == {"budgetops_webhook_latency_seconds_bucket"}
    assert "budgetops_webhook_errors_total" in used["BudgetOpsWebhookErrorRateHigh"]
    assert used["BudgetOpsNotReconciling"] == {"budgetops_reconciler_leading"}


# Dashboard --------------------------------------------------------------------------------


def test_the_dashboard_has_what_grafana_provisioning_needs() -> None:
    dashboard = _dashboard()
    assert {"title", "uid", "panels", "schemaVersion", "templating"} <= set(dashboard)
    assert (dashboard["title"], dashboard["uid"], dashboard["schemaVersion"]) == (
        "BudgetOps",
        "budgetops",
        39,
    )
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


def test_every_panel_is_complete_and_reads_the_chosen_data_source() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))
    for panel in panels:
        title = panel["title"]
        assert isinstance(panel["type"], str), title
        assert panel["type"], title
        assert isinstance(title, str)
        assert title.strip()
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, title
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in grid), title
        assert grid["w"] > 0, title
        assert grid["h"] > 0, title
        assert grid["x"] + grid["w"] <= 24, title
        assert panel["datasource"] == DATASOURCE, title
        targets = panel["targets"]
        assert targets, title
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), title
        for target in targets:
            assert target["expr"].strip(), title
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title


def test_no_two_panels_overlap() -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return set(
            itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"]))
        )

    for first, second in itertools.combinations(_dashboard()["panels"], 2):
        assert not cells(first) & cells(second), (first["title"], second["title"])


def test_the_budget_variable_lists_an_exported_label(exported: dict[str, set[str] | None]) -> None:
    [variable] = [v for v in _dashboard()["templating"]["list"] if v["name"] == "budget"]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
    assert match is not None
    metric, label = match.groups()
    labels = exported[metric]
    assert labels is not None
    assert label in labels
    assert variable["query"]["query"] == variable["definition"]


def test_the_dashboard_charts_balances_bands_decisions_the_webhook_and_leases() -> None:
    charted = {s.name for _, t in _targets() for s in _selectors(_substituted(t["expr"]))}
    assert charted >= {
        "budgetops_budget_allocation",
        "budgetops_budget_consumed",
        "budgetops_trust_top_account_consumed",
        "budgetops_risk_band",
        "budgetops_admissions_total",
        "budgetops_webhook_latency_seconds_bucket",
        "budgetops_status_writes_total",
        "budgetops_status_conflicts_total",
        "budgetops_batched_charges_total",
        "budgetops_leases_active",
        "budgetops_leases_lent",
        "budgetops_notifications_delivered_total",
        "budgetops_notification_failures_total",
        "budgetops_notifications_dropped_total",
    }


# Docs -------------------------------------------------------------------------------------


def test_the_docs_name_every_exported_metric_and_alert(
    exported: dict[str, set[str] | None],
) -> None:
    text = DOC.read_text()
    samples = [n for n in exported if not n.endswith(("_created", "_count", "_sum"))]
    families = {n.removesuffix("_bucket") for n in samples}
    missing = sorted(n for n in families if f"`{n}`" not in text)
    assert not missing, f"docs/observability.md does not list {missing}"
    assert not sorted(a for a in ALERTS if f"`{a}`" not in text)
    assert len(_examples()) >= 5


# Alert thresholds ---------------------------------------------------------------------------


def test_alert_thresholds_are_strict_in_the_code_the_rules_and_the_docs() -> None:
    """The seed's boundaries: low is less than 20% left, rapid is more than 50% consumed
    within the period. An account exactly on a boundary raises neither; the RiskBudget rules
    compare the same way, and the docs say so."""

    def raised(balance: int, consumed: int) -> list[str]:
        account = Account(allocation=Decimal(100), balance=Decimal(balance), window_start=NOW)
        return list(account_alerts(account, Alerts(), consumed_recently=Decimal(consumed)))

    assert raised(20, 50) == []
    assert raised(19, 50) == ["LowBalance"]
    assert raised(20, 51) == ["RapidDepletion"]
    expressions = {rule["alert"]: " ".join(rule["expr"].split()) for rule in _rules()}
    assert expressions["BudgetOpsRiskBudgetLow"].count(") < 0.2") == 1
    assert "> 0.5 *" in expressions["BudgetOpsRiskBudgetRapidDepletion"]
    for page in (DOC, ROOT / "docs" / "operations.md", ROOT / "docs" / "reconciler.md"):
        text = " ".join(page.read_text().split())
        for loose in ("at or below", "at most `alerts.low", "spent at least", "(50% is rapid"):
            assert loose not in text, f"{page.name}: {loose}"
