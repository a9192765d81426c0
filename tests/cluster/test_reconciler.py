"""The reconciler against a real API server: confirm, refund, reset, roll, transitions, races."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from kubernetes import client, config
from prometheus_client import CollectorRegistry

from budgetops.adapters.events import KubeEvents
from budgetops.adapters.objects import KubeObjects
from budgetops.apis.ledger import Witness
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import RiskBudgetStatus
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, Release
from budgetops.engine.ledger import audit
from budgetops.engine.reconcile import UNREADABLE, Sighting
from budgetops.observability.metrics import ReconcileMetrics
from budgetops.reconciling.operator import keep_budgets, run_operator
from budgetops.store.kube import KubeStore
from budgetops.usecases.reconciling import Reconciler, Timing
from tests import waiting
from tests.charges import charging, shipping

FAST = Timing(poll=timedelta(seconds=0.2), idle=timedelta(seconds=1))
eventually = functools.partial(waiting.eventually, within=20.0, every=0.1)
"""An operator's reconciles take seconds, not milliseconds."""


@dataclass
class ShiftedClock:
    """The wall clock moved by `offset`: how a test crosses a boundary without waiting."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return system_clock() + self.offset


@pytest.fixture(scope="module")
def api(budget_crds: Any) -> client.ApiClient:
    made = config.new_client_from_config(str(budget_crds.kubeconfig))
    made.configuration.connection_pool_maxsize = 32
    return made


@pytest.fixture
def store(api: client.ApiClient) -> Iterator[KubeStore]:
    started = KubeStore(api).start()
    yield started
    started.stop()


def trust(name: str, balance: int) -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "subjects": {"users": ["reconciler-test"]},
                "match": [{"resource": "configmaps"}],
                "initialBalance": balance,
                "resetInterval": "1h",
            },
        }
    )


def small_risk_budget(key: BudgetKey) -> RiskBudget:
    """100 points a month; it selects no workload, so only the test charges it."""
    return RiskBudget.model_validate(
        {
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": {
                "serviceId": key.name,
                "allocation": 100,
                "selector": {"matchLabels": {"app": "nothing-here"}},
            },
        }
    )


def reasons(api: client.ApiClient, name: str, namespace: str = "default") -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in events.items]


def reserve(
    store: KubeStore, key: BudgetKey, uid: str, *, now: datetime, witness: Witness | None
) -> Decision:
    change = charging(
        uid,
        account="user:reconciler-test",
        now=now,
        ttl=timedelta(seconds=3),
        ref=f"ConfigMap default/{uid}",
        witness=witness,
    )
    return store.update_status(key, change, needs_write=lambda d: d.cost > 0)


def account(store: KubeStore, key: BudgetKey) -> Any:
    budget = store.get(key)
    assert isinstance(budget, TrustBudget)
    assert audit(budget.status) == []
    return budget.status.accounts["user:reconciler-test"]


def risk_status(store: KubeStore, key: BudgetKey) -> RiskBudgetStatus:
    budget = store.get(key)
    assert isinstance(budget, RiskBudget)
    return budget.status


def condition(store: KubeStore, key: BudgetKey, type: str) -> str:
    budget = store.get(key)
    assert isinstance(budget, TrustBudget | RiskBudget)
    return next((c.status for c in budget.status.conditions if c.type == type), "absent")


@dataclass
class Running:
    """One operator replica running in a thread, as `budgetops run` runs it."""

    store: KubeStore
    clock: ShiftedClock
    reconciler: Reconciler
    stop: threading.Event
    thread: threading.Thread

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)


def start_operator(api: client.ApiClient, store: KubeStore, *, peering: bool) -> Running:
    clock = ShiftedClock()
    reconciler = Reconciler(
        store=store,
        objects=KubeObjects(api),
        clock=clock,
        events=KubeEvents(api, clock=clock),
        metrics=ReconcileMetrics(CollectorRegistry()),
        timing=FAST,
        versions=store.cache.version,
    )
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=run_operator,
        args=(keep_budgets(reconciler, store.cache), api),
        kwargs={"peering": peering, "stop": stop, "ready": ready},
        daemon=True,
    )
    thread.start()
    assert ready.wait(30), "the operator did not start"
    return Running(store, clock, reconciler, stop, thread)


@pytest.fixture
def operator(api: client.ApiClient, store: KubeStore) -> Iterator[ShiftedClock]:
    """The operator in a thread (standalone: no peering), on a clock the test moves."""
    running = start_operator(api, store, peering=False)
    yield running.clock
    running.halt()


def test_the_operator_confirms_refunds_resets_and_announces(
    api: client.ApiClient, store: KubeStore, operator: ShiftedClock
) -> None:
    clock = operator
    core = client.CoreV1Api(api)
    key = BudgetKey("TrustBudget", "reconcile-trust")
    store.apply(trust(key.name, 5))
    kept = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="reconcile-kept"))
    )
    seen = Witness("/api/v1/namespaces/default/configmaps/reconcile-kept", kept.metadata.uid)
    never = Witness("/api/v1/namespaces/default/configmaps/reconcile-never", "never-uid")
    now = clock()
    assert reserve(store, key, kept.metadata.uid, now=now, witness=seen).allowed
    assert reserve(store, key, "never-uid", now=now, witness=never).allowed
    try:
        eventually(lambda: account(store, key).reserved == 0)
        held = account(store, key)
        assert (held.spent, held.balance) == (1, 4)
        eventually(lambda: "ReservationRefunded" in reasons(api, key.name))

        for n in range(4):  # spend the rest: the account is exhausted
            assert reserve(store, key, f"spend-{n}", now=clock(), witness=None).allowed
        eventually(lambda: condition(store, key, "Exhausted") == "True")
        eventually(lambda: "Exhausted" in reasons(api, key.name))

        clock.offset = timedelta(hours=1)
        eventually(lambda: account(store, key).balance == 5)
        eventually(lambda: condition(store, key, "Exhausted") == "False")
        eventually(lambda: "AccountsReset" in reasons(api, key.name))
        budget = store.get(key)
        assert budget.status.observed_generation == budget.metadata.generation
    finally:
        store.delete(key)
        core.delete_namespaced_config_map("reconcile-kept", "default")


def test_the_operator_moves_bands_and_rolls_the_window(
    api: client.ApiClient, store: KubeStore, operator: ShiftedClock
) -> None:
    clock = operator
    key = BudgetKey("RiskBudget", "reconcile-risk", "default")
    store.apply(small_risk_budget(key))

    release = shipping(Release("r1", 45, "standard"), ttl=timedelta(seconds=3), clock=clock)

    try:
        assert store.update_status(key, release).allowed
        eventually(lambda: condition(store, key, "Elevated") == "True")
        eventually(lambda: "BandChanged" in reasons(api, key.name))
        window = risk_status(store, key).window
        assert window is not None
        clock.offset = window.end - system_clock() + timedelta(seconds=1)
        eventually(lambda: len(risk_status(store, key).history) == 1)
        closed = risk_status(store, key)
        assert (closed.history[0].consumed, closed.consumed, closed.band) == (45, 0, "Green")
        eventually(lambda: condition(store, key, "Elevated") == "False")
        eventually(lambda: "WindowClosed" in reasons(api, key.name))
    finally:
        store.delete(key)


def test_charges_racing_a_reset_lose_no_deduction(api: client.ApiClient) -> None:
    """A webhook replica charges while the operator resets the same account: both use
    compare-and-swap, so the reset never wipes a charge and no charge skips the reset."""
    webhook, operator_side = KubeStore(api).start(), KubeStore(api).start()
    clock = ShiftedClock()
    reconciler = Reconciler(
        store=operator_side,
        objects=None,
        clock=clock,
        events=KubeEvents(api, clock=clock),
        metrics=ReconcileMetrics(CollectorRegistry()),
    )
    key = BudgetKey("TrustBudget", "reconcile-race")
    webhook.apply(trust(key.name, 1000))
    try:
        for n in range(30):
            assert reserve(webhook, key, f"old-{n}", now=clock(), witness=None).allowed
        clock.offset = timedelta(hours=1)  # the interval boundary has passed for both sides

        def charge(n: int) -> bool:
            return reserve(webhook, key, f"new-{n}", now=clock(), witness=None).allowed

        with ThreadPoolExecutor(24) as pool:
            resets = [pool.submit(reconciler.reconcile, key) for _ in range(6)]
            charged = list(pool.map(charge, range(120)))
            for done in resets:
                done.result()
        assert all(charged)
        eventually(lambda: account(webhook, key).balance == 880)
        held = account(webhook, key)
        assert (held.allocation, held.spent + held.reserved) == (1000, 120)
        assert not any(k.startswith("old-") for k in held.reservations)
    finally:
        webhook.delete(key)
        webhook.stop()
        operator_side.stop()


def _counted(metrics: ReconcileMetrics) -> float:
    return sum(
        sample.value
        for family in metrics.transitions.collect()
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == "BandChanged"
    )


def test_with_peering_one_replica_reconciles_and_another_takes_over(
    api: client.ApiClient, budget_crds: Any
) -> None:
    replicas: list[Running] = []
    key = BudgetKey("RiskBudget", "reconcile-ha", "default")

    def release(points: int, name: str) -> Callable[[Budget], Decision]:
        return shipping(Release(name, points, "standard"), ttl=timedelta(seconds=3))

    try:
        for _ in range(2):  # each kept as soon as it runs, so `finally` stops it
            replicas.append(start_operator(api, KubeStore(api).start(), peering=True))
        store = replicas[0].store
        store.apply(small_risk_budget(key))
        assert store.update_status(key, release(45, "ha-1")).allowed
        eventually(lambda: sum(_counted(r.reconciler.metrics) for r in replicas) >= 1, within=60)
        time.sleep(1)  # a second announcer would have spoken by now
        counts = [_counted(r.reconciler.metrics) for r in replicas]
        assert sorted(counts) == [0, 1], counts
        leader = counts.index(1)
        replicas[leader].halt()
        follower = replicas[1 - leader].reconciler
        assert store.update_status(key, release(30, "ha-2")).allowed  # Yellow -> Red
        eventually(lambda: _counted(follower.metrics) == 1, within=90)
    finally:
        if replicas:
            replicas[0].store.delete(key)
        for replica in replicas:
            replica.halt()
            replica.store.stop()


def test_witnesses_are_looked_up_by_metadata_and_an_unreadable_collection_is_said_so(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    made = [
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"look-{n}"))
        )
        for n in range(2)
    ]
    here = "/api/v1/namespaces/default/configmaps"
    nowhere = "/apis/example.invalid/v1/namespaces/default/widgets"
    try:
        seen = KubeObjects(api).look(
            [f"{here}/look-0", f"{here}/look-1", f"{here}/look-gone", f"{nowhere}/w"]
        )
        assert seen == {
            f"{here}/look-0": Sighting(uid=made[0].metadata.uid, generation=0),
            f"{here}/look-1": Sighting(uid=made[1].metadata.uid, generation=0),
            f"{here}/look-gone": None,
            f"{nowhere}/w": UNREADABLE,
        }
    finally:
        for n in range(2):
            core.delete_namespaced_config_map(f"look-{n}", "default")
