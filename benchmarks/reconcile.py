"""How long the reconciler takes to carry every budget across one boundary, and its memory.

1,000 RiskBudgets (monthly windows) and 100 TrustBudgets of 100 accounts each (10,000
accounts, hourly resets) are created in a real API server; the operator runs in its own
process on a clock shifted so that the month (and the hour) ends `--lead` seconds after it
starts. Measured: the time from the boundary until every RiskBudget shows the new window
and every account its new interval, and the operator's peak resident memory.

Baseline, in the same run and before the operator starts: the API requests a boundary needs
with no reconcile logic, for the same 1,100 seeded objects from the same number of threads:
one compare-and-swap status write that changes the status, and one Event, per budget. The
ratio says how much of the boundary time is the API server's and how much is ours.

Run: python benchmarks/reconcile.py [--risk 1000] [--trust 100] [--accounts 100] [--lead 90]
(needs the binaries from `python hack/control_plane.py build`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.adapters.events import KubeEvents
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.engine.charges import TrustCharge
from budgetops.engine.conditions import set_condition
from budgetops.usecases.charging import Changes
from cluster import control_plane

ROOT = Path(__file__).resolve().parent.parent
BOUNDARY = datetime(2026, 12, 1, tzinfo=UTC)
NAMESPACE = "bench"
THREADS = 16


@dataclass
class ShiftedClock:
    offset: timedelta

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def operate(kubeconfig: str, offset_seconds: float) -> None:
    """The operator process: what `budgetops run` reconciles with, on a shifted clock."""
    from prometheus_client import CollectorRegistry

    from budgetops.cli.incluster import kube_reconciler
    from budgetops.cli.target import api_client
    from budgetops.observability.events import QueuedEvents
    from budgetops.reconciling.operator import keep_budgets, run_operator
    from budgetops.store.kube import KubeStore

    api = api_client(kubeconfig)
    clock = ShiftedClock(timedelta(seconds=offset_seconds))
    store = KubeStore(api).start()
    events = QueuedEvents(KubeEvents(api, clock=clock), busy=store.commits.busy)
    reconciler = kube_reconciler(
        api, store, events, CollectorRegistry(), versions=store.informer.version, clock=clock
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler = keep_budgets(reconciler, store.informer, workers=THREADS)
    run_operator(scheduler, api, peering=False, stop=stop)
    store.stop()


def risk_budget(n: int) -> RiskBudget:
    return RiskBudget.model_validate(
        {
            "metadata": {"name": f"svc-{n}", "namespace": NAMESPACE},
            "spec": {
                "serviceId": f"svc-{n}",
                "tier": n % 4,
                "selector": {"matchLabels": {"app": f"svc-{n}"}},
            },
        }
    )


def trust_budget(n: int) -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": f"team-{n}"},
            "spec": {
                "subjects": {"groups": [f"team-{n}"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 50,
                "resetInterval": "1h",
            },
        }
    )


def seed(store: Any, key: BudgetKey, accounts: int, clock: ShiftedClock) -> None:
    """Open `accounts` accounts with one confirmed issuance each, in one status write."""

    changes = Changes(clock=clock, ttl=timedelta(minutes=5))

    def change(budget: Budget) -> None:
        now = clock()
        for a in range(accounts):
            uid = f"{key.name}-{a}"
            issue = TrustCharge(key, f"user:{uid}", Decimal(1), uid, uid)
            changes.trust(issue, now=now, settle=True)(budget)

    store.update_status(key, change, timeout=60)


def rewrite_each(store: Any, events: Any, keys: list[BudgetKey], clock: ShiftedClock) -> float:
    """Baseline: the API requests a boundary needs, with nothing decided. For each budget one
    compare-and-swap status write that changes something (a condition's message: a PUT of
    an unchanged status is a no-op the API server never stores or sends to watchers) and
    one Event. Seconds for all."""

    def write(key: BudgetKey) -> None:
        def touch(budget: Budget) -> Budget:
            set_condition(
                budget.status.conditions,
                type="Baseline",
                status="True",
                reason="Benchmark",
                message=f"written at {time.time()}",
                now=clock(),
                generation=budget.metadata.generation,
            )
            return budget

        written = store.update_status(key, touch, timeout=60)
        events.emit(written, type="Normal", reason="Benchmark", message="baseline write")

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(write, keys))
    return time.monotonic() - started


def rolled(store: Any, key: BudgetKey) -> bool:
    """Whether `key` already shows the new window (RiskBudget) or every account its new
    interval (TrustBudget)."""
    budget = store.cache.get(key)
    if isinstance(budget, RiskBudget):
        return budget.status.window is not None and budget.status.window.start == BOUNDARY
    accounts = budget.status.accounts.values() if isinstance(budget, TrustBudget) else ()
    return bool(accounts) and all(a.window_start == BOUNDARY for a in accounts)


def ready(store: Any, keys: list[BudgetKey]) -> bool:
    found = (store.cache.get(k) for k in keys)
    return all(b is not None and b.status.observed_generation for b in found)


def peak_rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--risk", type=int, default=1000)
    parser.add_argument("--trust", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--lead", type=float, default=90.0, help="seconds to prepare")
    parser.add_argument(
        "--operate", nargs=2, metavar=("KUBECONFIG", "OFFSET"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


@dataclass
class Result:
    baseline: float
    margin: float
    elapsed: float
    idle_rss: float
    idle_cpu: float
    """The operator's CPU between ready and the boundary, in cores."""
    idle_seconds: float
    rss: float
    peak: float


def _prepare(
    store: Any, events: Any, args: argparse.Namespace, clock: ShiftedClock
) -> tuple[list[BudgetKey], float]:
    """Create and seed every budget; returns their keys and the baseline seconds."""
    budgets: list[Budget] = [risk_budget(n) for n in range(args.risk)]
    budgets += [trust_budget(n) for n in range(args.trust)]
    with ThreadPoolExecutor(THREADS) as pool:
        keys = [BudgetKey.of(b) for b in pool.map(store.apply, budgets)]
    trust = [k for k in keys if k.kind == "TrustBudget"]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda k: seed(store, k, args.accounts, clock), trust))
    return keys, rewrite_each(store, events, keys, clock)


def _measure(plane: Any, api: Any, store: Any, args: argparse.Namespace) -> Result:
    real_boundary = time.time() + args.lead
    clock = ShiftedClock(BOUNDARY - datetime.fromtimestamp(real_boundary, UTC))
    keys, baseline = _prepare(store, KubeEvents(api, clock=clock), args, clock)
    command = [sys.executable, __file__, "--operate", str(plane.kubeconfig)]
    operator = subprocess.Popen(
        [*command, str(clock.offset.total_seconds())], stderr=subprocess.DEVNULL
    )
    try:
        while not ready(store, keys):
            if time.time() > real_boundary:
                raise SystemExit(f"not ready before the boundary: raise --lead above {args.lead}")
            time.sleep(0.2)
        margin = real_boundary - time.time()
        idle_rss, _ = peak_rss_mib(operator.pid)
        idle_since, idle_cpu = time.time(), cpu_seconds(operator.pid)
        while time.time() < real_boundary - 1:
            time.sleep(0.05)
        idle_seconds = time.time() - idle_since
        idle_cpu = (cpu_seconds(operator.pid) - idle_cpu) / idle_seconds
        while time.time() < real_boundary:
            time.sleep(0.05)
        # Only budgets not yet seen rolled are looked at again (a rolled budget stays
        # rolled), so the watching side takes as little CPU from the others as it can.
        pending = list(keys)
        while pending := [key for key in pending if not rolled(store, key)]:
            if time.time() > real_boundary + 120:
                raise SystemExit(f"{len(pending)} of {len(keys)} budgets not rolled in 120 s")
            time.sleep(0.05)
        elapsed = time.time() - real_boundary
        rss, peak = peak_rss_mib(operator.pid)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
    return Result(baseline, margin, elapsed, idle_rss, idle_cpu, idle_seconds, rss, peak)


def main() -> None:
    args = _arguments()
    if args.operate:
        operate(args.operate[0], float(args.operate[1]))
        return
    from kubernetes import client

    from budgetops.cli.target import api_client
    from budgetops.store.kube import KubeStore

    with control_plane() as plane:
        plane.kubectl("create", "namespace", NAMESPACE)
        api = api_client(str(plane.kubeconfig))
        store = KubeStore(api).start()
        try:
            result = _measure(plane, api, store, args)
        finally:
            store.stop()
        events = client.CoreV1Api(api).list_namespaced_event(NAMESPACE, limit=1)
        assert events.items, "the operator announced the window closes"
    print(f"budgets: {args.risk} RiskBudgets, {args.trust} TrustBudgets x {args.accounts} accounts")
    print(f"ready {result.margin:.1f} s before the boundary")
    print(f"operator RSS when idle: {result.idle_rss:.0f} MiB")
    print(
        f"operator CPU when idle: {result.idle_cpu:.1%} of a core "
        f"over the {result.idle_seconds:.0f} s before the boundary"
    )
    print(f"{'':44}{'seconds':>10}{'ratio':>8}")
    for name, seconds in (
        ("baseline: a status write and an Event each", result.baseline),
        ("reconciler: every budget across the boundary", result.elapsed),
    ):
        print(f"{name:44}{seconds:>10.2f}{seconds / result.baseline:>8.2f}")
    print(f"operator memory: {result.rss:.0f} MiB resident after, {result.peak:.0f} MiB peak")
    if (args.risk, args.trust * args.accounts) != (1000, 10_000):
        print("targets (< 10 s, < 250 MiB) apply at 1,000 RiskBudgets and 10,000 accounts")
        return
    verdict = "met" if result.elapsed < 10 and result.peak < 250 else "NOT met"
    print(f"targets (< 10 s, < 250 MiB): {verdict}")


if __name__ == "__main__":
    main()
