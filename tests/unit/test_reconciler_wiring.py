"""The reconciler end to end on the embedded store: a band change becomes a status write, an
Event, a metric and one webhook message with the numbers; per-budget metrics stay bounded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, Subject, TrustBudget
from budgetops.engine.decisions import Release
from budgetops.engine.ledger import confirm
from budgetops.notify.outbox import Notifier
from budgetops.observability.metrics import BudgetCollector, ReconcileMetrics
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.reconciling import Reconciler, Timing
from tests.charges import charging, shipping

from .test_decisions import trust_budget
from .test_notify_targets import TOKEN_PATH, Receiver

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def emit(
        self, subject: Subject, *, type: str, reason: str, message: str, at: datetime | None = None
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

        store.update_status(key, shipping(Release("v1", 48, "standard"), now=NOW))
        assert reconciler.reconcile(key) == timedelta(minutes=5)  # until the reservation expires
        notifier.deliver_due(NOW)

    [(kind, reason, message)] = events.events
    assert (kind, reason) == ("Warning", "BandChanged")
    assert message.startswith(
        "payments-api: Green -> Yellow, 48 / 120 RP (40.0%) Consider pausing non-critical "
        "changes until the next budget window. Still allowed:"
    )
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["subject"] == "[Warning] Risk Budget at 40.0% for payments-api"
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
        for n in range(12):
            for i in range(n + 1):
                charging(f"u{n}-{i}", account=f"user:u{n}", ref="", now=NOW)(budget)

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


def test_budget_metrics_count_the_accounts_each_alert_is_raised_for(tmp_path: Path) -> None:
    """One series per alert and TrustBudget, counting the accounts in status.alerting, so
    Prometheus pages on what the reconciler judged with the budget's own thresholds."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    key = BudgetKey.of(store.apply(trust_budget(initialBalance=10)))
    now = [NOW]
    reconciler = Reconciler(
        store=store,
        objects=None,
        clock=lambda: now[0],
        events=Recorded(),
        metrics=ReconcileMetrics(CollectorRegistry()),
        timing=Timing(idle=timedelta(hours=1)),
    )

    def spend(*spent: tuple[str, int]) -> Any:
        def change(budget: Budget) -> None:
            for account, times in spent:
                for i in range(times):
                    request = f"{account}-{now[0].isoformat()}-{i}"
                    charging(request, account=account, ref="", now=now[0])(budget)

        return change

    store.update_status(key, spend(("user:carol", 1)))
    reconciler.reconcile(key)
    now[0] = NOW + timedelta(minutes=20)
    # alice: 1 of 10 left (low: less than 20%); bob: nothing left (exhausted, and low);
    # carol: 6 within 1h (more than 50%)
    store.update_status(key, spend(("user:alice", 9), ("user:bob", 10), ("user:carol", 6)))
    reconciler.reconcile(key)
    registry = CollectorRegistry()
    registry.register(BudgetCollector(store))
    where = {"kind": "TrustBudget", "namespace": "", "name": "certs"}
    counts = {
        alert: registry.get_sample_value(
            "budgetops_trust_alerting_accounts", where | {"alert": alert}
        )
        for alert in ("Exhausted", "LowBalance", "RapidDepletion")
    }
    assert counts == {"Exhausted": 1, "LowBalance": 2, "RapidDepletion": 1}
    assert registry.get_sample_value("budgetops_trust_exhausted_accounts", where) == 1


def versioned(store: SQLiteStore, now: list[datetime], held: dict[str, str]) -> Reconciler:
    """A reconciler that believes the store holds `held["version"]` of every budget."""
    return Reconciler(
        store=store,
        objects=None,
        clock=lambda: now[0],
        events=Recorded(),
        metrics=ReconcileMetrics(CollectorRegistry()),
        timing=Timing(idle=timedelta(minutes=1)),
        versions=lambda _: held["version"],
    )


def reasons(reconciler: Reconciler) -> list[str]:
    assert isinstance(reconciler.events, Recorded)
    return [reason for _, reason, _ in reconciler.events.events]


def test_a_wake_for_an_unchanged_budget_costs_no_reconcile_until_it_is_due(
    tmp_path: Path,
) -> None:
    """`versions` says which resourceVersion the store holds; while it is the one this
    reconciler left and nothing is due, reconcile answers when to look again without
    running: idle looks included, however many pass."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    budget = risk()
    budget.metadata.resource_version = "7"  # the embedded store keeps it as given
    key = BudgetKey.of(store.apply(budget))
    held = {"version": "7"}
    now = [NOW]
    reconciler = versioned(store, now, held)
    assert reconciler.reconcile(key) == timedelta(minutes=1)
    window_end = datetime(2026, 4, 1, tzinfo=UTC)
    assert reconciler.left[key] == ("7", window_end), "due at the window's end, not at idle"

    ship = shipping(Release("v1", 48, "standard"), now=NOW)  # a change the skip must see
    store.update_status(key, ship)
    for minutes in (1, 2, 30):  # idle looks: "7" still held, so each is a lookup
        now[0] = NOW + timedelta(minutes=minutes)
        assert reconciler.reconcile(key) == timedelta(minutes=1)
    assert reasons(reconciler) == []
    held["version"] = "8"  # the watch delivers the release
    assert reconciler.reconcile(key) == timedelta(minutes=1)
    assert reasons(reconciler) == ["BandChanged"]


def test_an_unchanged_budget_is_reconciled_once_something_in_it_falls_due(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    budget = risk()
    budget.metadata.resource_version = "1"
    key = BudgetKey.of(store.apply(budget))
    now = [datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)]
    reconciler = versioned(store, now, {"version": "1"})
    assert reconciler.reconcile(key) == timedelta(seconds=30), "woken at the window's end"
    assert reconciler.left[key][1] == datetime(2026, 4, 1, tzinfo=UTC)
    now[0] = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
    reconciler.reconcile(key)
    rolled = store.get(key)
    assert isinstance(rolled, RiskBudget)
    assert rolled.status.window is not None
    assert rolled.status.window.start == datetime(2026, 4, 1, tzinfo=UTC), "same version, rolled"


class Issuing:
    """A TrustBudget issued against at `now`, each issuance settled at once, and reconciled
    after each round as the store's watch would prompt."""

    def __init__(self, tmp_path: Path, balance: int) -> None:
        self.store = SQLiteStore(tmp_path / "ledger.sqlite3")
        budget = trust_budget(initialBalance=balance)
        budget.metadata.resource_version = "1"
        self.key = BudgetKey.of(self.store.apply(budget))
        self.now = [NOW]
        self.held = {"version": "1"}
        self.reconciler = versioned(self.store, self.now, self.held)

    def issue(self, count: int) -> None:
        now = self.now[0]

        def change(budget: Budget) -> None:
            for i in range(count):
                uid = f"{now.isoformat()}-{i}"
                assert charging(uid, now=now)(budget).allowed
                confirm(budget.status, key=uid, now=now)

        self.store.update_status(self.key, change)
        self.held["version"] += "+"  # as the watch would report it
        self.reconciler.reconcile(self.key)

    def due(self) -> datetime | None:
        return self.reconciler.left[self.key][1]

    def alerting(self) -> dict[str, list[str]]:
        stored = self.store.get(self.key)
        assert isinstance(stored, TrustBudget)
        return dict(stored.status.alerting)


def test_a_raised_rapid_depletion_alert_keeps_idle_looks_full(tmp_path: Path) -> None:
    """The alert clears as usage ages out of the reconciler's memory, which changes no
    version: while it is up, every idle look must be a real reconcile."""
    budget = Issuing(tmp_path, balance=10)
    budget.issue(1)
    assert budget.due() == datetime(2026, 3, 11, tzinfo=UTC), "quiet: due at the reset"
    budget.now[0] = NOW + timedelta(minutes=20)
    budget.issue(6)  # 6 of 10 within the hour
    assert budget.alerting() == {"user:alice": ["RapidDepletion"]}
    assert budget.due() == budget.now[0] + timedelta(minutes=1), "due at the next idle look"
    budget.now[0] += timedelta(minutes=61)  # the burst ages out; nobody changes the budget
    budget.reconciler.reconcile(budget.key)
    assert budget.alerting() == {}, "cleared by an idle look at an unchanged version"


def test_a_usage_reading_that_came_too_soon_is_taken_later_without_a_change(
    tmp_path: Path,
) -> None:
    """Readings are kept a quarter period apart. One skipped for coming too soon must be
    taken later even if nothing changes meanwhile, or a burst that follows goes unseen."""
    budget = Issuing(tmp_path, balance=100)
    budget.issue(1)
    budget.now[0] = NOW + timedelta(minutes=1)
    budget.issue(40)  # too soon after the first reading to keep
    assert budget.due() == NOW + timedelta(minutes=15)
    budget.now[0] = NOW + timedelta(minutes=15)
    budget.reconciler.reconcile(budget.key)  # the same version: only the skipped reading is due
    budget.now[0] = NOW + timedelta(minutes=62)
    budget.issue(55)  # 55 of 100 since the reading at 09:15
    assert "RapidDepletion" in budget.alerting()["user:alice"]


class Snatched(dict[str, Any]):
    """A status map being changed by another thread: reading it is a race."""

    def __iter__(self) -> Any:
        raise RuntimeError("dictionary changed size during iteration")

    def values(self) -> Any:
        raise RuntimeError("dictionary changed size during iteration")

    def items(self) -> Any:
        raise RuntimeError("dictionary changed size during iteration")


class NextBatchFirst(SQLiteStore):
    """The embedded store, whose next batch takes the budget just written as its snapshot:
    by the time `update_status` returns, a charge may be changing that very object."""

    def update_status(self, key: BudgetKey, change: Any, **options: Any) -> Any:
        result = super().update_status(key, change, **options)
        if isinstance(result, tuple) and isinstance(result[1], TrustBudget):
            result[1].status.accounts = Snatched(result[1].status.accounts)
        return result


def test_the_reconciler_reads_no_status_once_its_write_returned(tmp_path: Path) -> None:
    """In `budgetops serve` the webhook charges the object the reconciler's write left (the
    store keeps it as the next snapshot): reading its accounts after the write raced with
    that charge."""
    store = NextBatchFirst(tmp_path / "ledger.sqlite3")
    budget = trust_budget(initialBalance=10)
    key = BudgetKey.of(store.apply(budget))
    store.update_status(key, charging("held", now=NOW))  # reserved: due at its expiry
    reconciler = versioned(store, [NOW], {"version": "1"})
    assert reconciler.reconcile(key) == timedelta(minutes=1)  # idle: before the expiry
