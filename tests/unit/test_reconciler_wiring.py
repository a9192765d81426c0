"""The reconciler end to end on the embedded store: a band change becomes a status write, an
Event, a metric and one webhook message with the numbers; per-budget metrics stay bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from budgetops.apis.resources import Budget, RiskBudget, TrustBudget
from budgetops.engine.decisions import Release, admit_risk, admit_trust
from budgetops.handlers.reconciler import Reconciler, Timing
from budgetops.notify.outbox import Notifier
from budgetops.observability.metrics import BudgetCollector, ReconcileMetrics
from budgetops.store import BudgetKey, SQLiteStore

from .test_notify_targets import TOKEN_PATH, Receiver

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def emit(
        self, budget: Budget, *, type: str, reason: str, message: str, at: datetime | None = None
    ) -> None:
        self.events.append((type, reason, message))


class Secrets:
    def __init__(self, url: str) -> None:
        self.url = url

    def read(self, namespace: str, name: str, key: str) -> str:
        assert (namespace, name, key) == ("payments", "hooks", "ops")
        return self.url


def risk() -> RiskBudget:
    return RiskBudget.model_validate(
        {
            "metadata": {"name": "payments-api", "namespace": "payments"},
            "spec": {
                "serviceId": "payments-api",
                "tier": 2,
                "notifications": {
                    "channels": [
                        {
                            "name": "ops",
                            "type": "webhook",
                            "secretRef": {"name": "hooks", "key": "ops"},
                        }
                    ]
                },
            },
        }
    )


def test_a_band_change_reaches_status_events_metrics_and_the_channel(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    key = BudgetKey.of(store.apply(risk()))
    registry = CollectorRegistry()
    events = Recorded()
    with Receiver() as receiver:
        notifier = Notifier(
            secrets=Secrets(receiver.url + TOKEN_PATH), registry=registry, clock=lambda: NOW
        )
        reconciler = Reconciler(
            store=store,
            objects=None,
            clock=lambda: NOW,
            events=events,
            metrics=ReconcileMetrics(registry),
            announcer=notifier,
            timing=Timing(idle=timedelta(hours=1)),
        )
        assert reconciler.reconcile(key) == timedelta(hours=1)  # the window ends in weeks

        def ship(budget: Budget) -> Any:
            assert isinstance(budget, RiskBudget)
            release = Release("v1", 48, "standard")
            return admit_risk(
                budget.status, budget.spec, release=release, now=NOW, ttl=timedelta(minutes=5)
            )

        store.update_status(key, ship)
        assert reconciler.reconcile(key) == timedelta(minutes=5)  # until the reservation expires
        notifier.deliver_due(NOW)

    [(kind, reason, message)] = events.events
    assert (kind, reason) == ("Warning", "BandChanged")
    assert message.startswith("payments-api: Green -> Yellow, 48 / 120 RP (40.0%) Still allowed:")
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["notices"][0]["summary"] == "payments-api: Green -> Yellow, 48 / 120 RP (40.0%)"
    stored = store.get(key)
    assert isinstance(stored, RiskBudget)
    assert [c.type for c in stored.status.conditions if c.status == "True"] == ["Elevated", "Ready"]
    exposition = generate_latest(registry).decode()
    assert 'budgetops_transitions_total{kind="RiskBudget",reason="BandChanged"} 1.0' in exposition
    assert 'budgetops_notifications_delivered_total{channel_type="webhook"} 1.0' in exposition


def test_budget_metrics_name_at_most_five_accounts_per_trust_budget(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    budget = TrustBudget.model_validate(
        {
            "metadata": {"name": "certs"},
            "spec": {
                "subjects": {"patterns": ["*"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 100,
            },
        }
    )
    key = BudgetKey.of(store.apply(budget))

    def issue(budget: Budget) -> None:
        assert isinstance(budget, TrustBudget)
        for n in range(12):
            for i in range(n + 1):
                admit_trust(
                    budget.status,
                    budget.spec,
                    account=f"user:u{n}",
                    cost=budget.spec.cost,
                    key=f"u{n}-{i}",
                    ref="",
                    now=NOW,
                    ttl=timedelta(minutes=5),
                )

    store.update_status(key, issue)
    registry = CollectorRegistry()
    registry.register(BudgetCollector(store))
    lines = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("budgetops_trust_top_account_consumed{")
    ]
    assert [line.split('account="')[1].split('"')[0] for line in lines] == [
        "user:u11",
        "user:u10",
        "user:u9",
        "user:u8",
        "user:u7",
    ]
    assert "budgetops_budget_consumed{" in generate_latest(registry).decode()


def test_a_wake_for_an_unchanged_budget_costs_no_reconcile_until_it_is_due(
    tmp_path: Path,
) -> None:
    """`versions` says which resourceVersion the store holds; while it is the one this
    reconciler left and nothing is due, reconcile answers the time left without running."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    budget = risk()
    budget.metadata.resource_version = "7"  # the embedded store keeps it as given
    key = BudgetKey.of(store.apply(budget))
    held = {"version": "7"}
    now = [NOW]
    events = Recorded()
    reconciler = Reconciler(
        store=store,
        objects=None,
        clock=lambda: now[0],
        events=events,
        metrics=ReconcileMetrics(CollectorRegistry()),
        timing=Timing(idle=timedelta(minutes=1)),
        versions=lambda _: held["version"],
    )
    assert reconciler.reconcile(key) == timedelta(minutes=1)
    assert reconciler.left[key] == ("7", NOW + timedelta(minutes=1))

    def ship(budget: Budget) -> Any:  # a change the skip must not hide once it is seen
        assert isinstance(budget, RiskBudget)
        release = Release("v1", 48, "standard")
        return admit_risk(
            budget.status, budget.spec, release=release, now=NOW, ttl=timedelta(minutes=5)
        )

    store.update_status(key, ship)
    now[0] = NOW + timedelta(seconds=20)
    assert reconciler.reconcile(key) == timedelta(seconds=40)  # "7" still held: skipped
    assert events.events == []
    held["version"] = "8"  # the watch delivers the release
    assert reconciler.reconcile(key) == timedelta(minutes=1)
    assert [reason for _, reason, _ in events.events] == ["BandChanged"]
