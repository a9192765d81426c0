"""Prometheus metrics. Label sets are bounded: budget kind, decision and reason, never the
account or user (accounts can be many; per-account figures belong in status)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from budgetops.apis.resources import Budget, Kind, RiskBudget, TrustBudget
from budgetops.apis.trustbudget import AlertKind
from budgetops.engine import spending
from budgetops.engine.bands import BAND_ORDER

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AdmissionMetrics:
    """What the webhook counts and times, registered in the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.admissions = Counter(
            "budgetops_admissions",
            "Budget charges decided at admission, by budget kind, decision and reason.",
            ["kind", "decision", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "budgetops_webhook_latency_seconds",
            "Time from receiving an AdmissionReview to having its answer.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "budgetops_webhook_errors",
            "AdmissionReviews answered with an HTTP error, by status code.",
            ["code"],
            registry=registry,
        )
        self.failed_open = Counter(
            "budgetops_admissions_failed_open",
            "Requests a failOpen budget admitted uncharged because its store did not answer "
            "in time, by budget (budgets are few; never an account).",
            ["kind", "budget"],
            registry=registry,
        )
        self.failed_open_settled = Counter(
            "budgetops_failed_open_settlements",
            "Failed-open charges retried to an end: settled, refused by the balance, gone "
            "with their budget, failed, or dropped unsettled (the retry queue was full).",
            ["kind", "budget", "outcome"],
            registry=registry,
        )


class CommitStats(Protocol):
    """What a group-committing store counts (KubeStore.stats)."""

    batches: int
    charges: int
    conflicts: int
    largest_batch: int


class StoreCollector(Collector):
    """Reads a store's counters at scrape time, so the store needs no metrics of its own."""

    def __init__(self, stats: CommitStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "budgetops_status_writes",
            "Status writes (one per committed batch).",
            value=self.stats.batches,
        )
        yield CounterMetricFamily(
            "budgetops_batched_charges",
            "Charges written as part of a batch.",
            value=self.stats.charges,
        )
        yield CounterMetricFamily(
            "budgetops_status_conflicts",
            "Status writes refused with 409 and retried on fresh state.",
            value=self.stats.conflicts,
        )
        yield GaugeMetricFamily(
            "budgetops_largest_batch",
            "The most charges one status write has carried.",
            value=self.stats.largest_batch,
        )


class Dropping(Protocol):
    dropped: int


class EventsCollector(Collector):
    """Events a full queue dropped (`QueuedEvents`), read at scrape time."""

    def __init__(self, events: Dropping) -> None:
        self.events = events

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "budgetops_events_dropped",
            "Kubernetes Events dropped because the poster fell behind (logged as well).",
            value=self.events.dropped,
        )


class ReconcileMetrics:
    """What the reconciler counts; labels are kind, reason and outcome only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "budgetops_transitions",
            "Notices the reconciler raised (band changes, alerts, resets, refunds), by reason.",
            ["kind", "reason"],
            registry=registry,
        )
        self.reservations = Counter(
            "budgetops_reservations_settled",
            "Reservations settled by the reconciler: confirmed, refunded or unverified.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "budgetops_reconcile_failures",
            "Reconciles that raised and will be retried.",
            ["kind"],
            registry=registry,
        )
        self.leading = Gauge(
            "budgetops_reconciler_leading",
            "1 while this replica reconciles, else 0: summed over replicas, 0 means no "
            "replica does (BudgetOpsNotReconciling).",
            registry=registry,
        )


TOP_ACCOUNTS = 5
"""Accounts per TrustBudget exported by name: the most consumed, never all of them."""

ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
"""Every account alert, each a series per TrustBudget (0 when no account has it raised)."""


class BudgetLister(Protocol):
    def list(self, kind: Kind | None = None, *, with_status: bool = True) -> list[Budget]: ...


class BudgetCollector(Collector):
    """Per-budget figures read from the store's cache at scrape time.

    One series per budget (budgets are few) plus the TOP_ACCOUNTS most consumed accounts of
    each TrustBudget: accounts can be thousands, and a series per user would swamp
    Prometheus.
    """

    def __init__(self, store: BudgetLister) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        labels = ["kind", "namespace", "name"]
        allocation = GaugeMetricFamily(
            "budgetops_budget_allocation",
            "Points or money allocated, summed over accounts.",
            labels=labels,
        )
        consumed = GaugeMetricFamily(
            "budgetops_budget_consumed",
            "Spent, reserved and leased, summed over accounts.",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "budgetops_reservations_pending", "Reservations waiting to be confirmed.", labels=labels
        )
        band = GaugeMetricFamily(
            "budgetops_risk_band", "1 for the band a RiskBudget is in.", labels=[*labels, "band"]
        )
        unknowns = GaugeMetricFamily(
            "budgetops_risk_unknowns",
            "Unknowns reported by the releases a RiskBudget admitted this window.",
            labels=labels,
        )
        uncertainty = GaugeMetricFamily(
            "budgetops_risk_unknowns_uncertainty",
            "Summed uncertainty of the releases a RiskBudget admitted this window.",
            labels=labels,
        )
        unknown_releases = GaugeMetricFamily(
            "budgetops_risk_unknowns_releases",
            "Releases this window by what their unknowns did: reported (admitted with "
            "unknowns), warned (admitted past a limit), blocked (refused for them).",
            labels=[*labels, "outcome"],
        )
        exhausted = GaugeMetricFamily(
            "budgetops_trust_exhausted_accounts", "Accounts with nothing left.", labels=labels
        )
        alerting = GaugeMetricFamily(
            "budgetops_trust_alerting_accounts",
            "Accounts with an alert raised (status.alerting), by alert: what to page on.",
            labels=[*labels, "alert"],
        )
        top = GaugeMetricFamily(
            "budgetops_trust_top_account_consumed",
            f"Consumption of the {TOP_ACCOUNTS} most consumed accounts of each TrustBudget.",
            labels=[*labels, "account"],
        )
        active_leases = GaugeMetricFamily(
            "budgetops_leases_active", "Leases open now.", labels=labels
        )
        lent = GaugeMetricFamily(
            "budgetops_leases_lent", "What the open leases still lend.", labels=labels
        )
        # Informative budgets: never enforced, only counted (sum() over budgets is the master).
        by_provider = CounterMetricFamily(
            "budgetops_lease_spent_by_provider",
            "Spending reported through leases, by provider (informative).",
            labels=[*labels, "provider"],
        )
        by_project = CounterMetricFamily(
            "budgetops_lease_spent_by_project",
            "Spending reported through leases, by the agents' project (informative).",
            labels=[*labels, "project"],
        )
        # Their optional allocations (spec.informativeAllocations): progress, never a limit.
        informative = GaugeMetricFamily(
            "budgetops_lease_informative_allocation",
            "An informative allocation (USD) of a TrustBudget, by scope (total, provider, "
            "project) and what it is of.",
            labels=[*labels, "scope", "of"],
        )
        informative_used = GaugeMetricFamily(
            "budgetops_lease_informative_percent_used",
            "Reported spending as a percentage of its informative allocation (passes 100; "
            "nothing is refused).",
            labels=[*labels, "scope", "of"],
        )
        for budget in self.store.list():
            if not isinstance(budget, TrustBudget | RiskBudget):
                continue
            key = [budget.kind, budget.metadata.namespace or "", budget.metadata.name]
            accounts = budget.status.accounts
            allocation.add_metric(key, float(sum(a.allocation for a in accounts.values())))
            used = {n: a.allocation - a.balance for n, a in accounts.items()}
            consumed.add_metric(key, float(sum(used.values())))
            pending.add_metric(key, sum(len(a.reservations) for a in accounts.values()))
            if isinstance(budget, RiskBudget):
                for level in BAND_ORDER:
                    band.add_metric([*key, level], 1.0 if budget.status.band == level else 0.0)
                tally = budget.status.unknowns
                unknowns.add_metric(key, tally.total)
                uncertainty.add_metric(key, float(tally.cumulative_uncertainty))
                for outcome, count in (
                    ("reported", tally.releases),
                    ("warned", tally.warned),
                    ("blocked", tally.blocked),
                ):
                    unknown_releases.add_metric([*key, outcome], count)
            elif isinstance(budget, TrustBudget):
                exhausted.add_metric(key, budget.status.exhausted_accounts)
                raised = budget.status.alerting.values()
                for alert in ALERT_KINDS:
                    alerting.add_metric([*key, alert], sum(1 for kinds in raised if alert in kinds))
                for name in heapq.nlargest(TOP_ACCOUNTS, used, key=used.__getitem__):
                    top.add_metric([*key, name], float(used[name]))
                holds = [h for a in accounts.values() for h in a.leases.values()]
                active_leases.add_metric(key, sum(1 for h in holds if h.state == "active"))
                lent.add_metric(key, float(sum(a.leased_out for a in accounts.values())))
                totals = budget.status.spent_by
                for provider, amount in totals.providers.items():
                    by_provider.add_metric([*key, provider], float(amount))
                for project, amount in totals.projects.items():
                    by_project.add_metric([*key, project], float(amount))
                for item in spending.progress(totals, budget.spec.informative_allocations):
                    scope = [*key, item.scope, item.name]
                    informative.add_metric(scope, float(item.allocation))
                    informative_used.add_metric(scope, float(item.percent))
        yield from (allocation, consumed, pending, band, exhausted, alerting, top)
        yield from (active_leases, lent, by_provider, by_project, informative, informative_used)
        yield from (unknowns, uncertainty, unknown_releases)
