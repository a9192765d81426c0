"""Prometheus metrics. Label sets are bounded: budget kind, decision and reason, never the
account or user (accounts can be many; per-account figures belong in status)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
