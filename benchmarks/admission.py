"""Admissions per second and latency on one hot budget: embedded webhook, then in cluster.

Embedded: the real webhook server (`budgetops serve`'s code) over the SQLite ledger on
127.0.0.1, driven by 64 keep-alive HTTP clients in a separate process, each POSTing a CSR
AdmissionReview with a fresh uid. The baseline is the same server with no budget to charge
(parse, classify, answer), measured in the same run.

In cluster (needs the binaries from hack/control_plane.py): the in-cluster store on one hot
TrustBudget, 64 threads charging it, with group commit and with one status write per
charge, both against the same real API server in the same run. Each run ends with an
overspend check: what was admitted must equal what the status holds.

Run: python benchmarks/admission.py [--seconds 5] [--skip-cluster]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.admission.classify import Identity
from budgetops.admission.webhook import Admission, serve
from budgetops.apis.resources import Budget, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, admit_trust
from budgetops.engine.ledger import audit, confirm
from budgetops.store import BudgetKey, ChargeTimeout, SQLiteStore
from cluster import load_harness

CLIENTS = 64
ROOT = Path(__file__).resolve().parent.parent
KEY = BudgetKey("TrustBudget", "hot")


def hot_budget() -> TrustBudget:
    return TrustBudget.model_validate(
        {
            "metadata": {"name": "hot"},
            "spec": {
                "subjects": {"users": ["alice"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": 1_000_000_000,
                "resetInterval": "24h",
            },
        }
    )


def review(uid: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {
                    "group": "certificates.k8s.io",
                    "version": "v1",
                    "kind": "CertificateSigningRequest",
                },
                "resource": {
                    "group": "certificates.k8s.io",
                    "version": "v1",
                    "resource": "certificatesigningrequests",
                },
                "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": {
                    "metadata": {"name": uid, "uid": uid},
                    "spec": {"usages": ["client auth"]},
                },
            },
        }
    ).encode()


class Settler:
    """Confirms open reservations every 50 ms, as the reconciler's watch will when it sees
    the objects; without it every admission leaves the status one reservation larger."""

    def __init__(self, store: Any, key: BudgetKey) -> None:
        self.store, self.key = store, key
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Settler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        def settle(budget: Budget) -> Decision:
            now = system_clock()
            for account in list(budget.status.accounts.values()):
                for uid in list(account.reservations):
                    confirm(budget.status, key=uid, now=now)
            return Decision(True, "Charged", Decimal(1))

        while not self.stopped.wait(0.05):
            self.store.update_status(self.key, settle)


def _client(port: int, worker: int, seconds: float) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, allowed, n = [], 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = review(f"w{worker}-{n}")
        start = time.perf_counter()
        connection.request(
            "POST", "/validate?timeout=5s", body=body, headers={"Content-Type": "application/json"}
        )
        answer = json.loads(connection.getresponse().read())
        latencies.append(time.perf_counter() - start)
        allowed += bool(answer["response"]["allowed"])
        n += 1
    connection.close()
    return latencies, allowed


def _load(port: int, seconds: float, queue: Any) -> None:
    """The client process: CLIENTS threads, each a keep-alive connection."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda w: _client(port, w, seconds), range(CLIENTS)))
    latencies = [x for lat, _ in results for x in lat]
    queue.put((latencies, sum(a for _, a in results)))


def drive(port: int, seconds: float) -> tuple[float, float, float, int]:
    """(admissions/s, p50 ms, p99 ms, allowed) from a separate client process."""
    queue: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load, args=(port, seconds, queue))
    start = time.perf_counter()
    process.start()
    latencies, allowed = queue.get()
    process.join()
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / min(elapsed, seconds + 1), cuts[49] * 1000, cuts[98] * 1000, allowed


def embedded(seconds: float) -> list[tuple[str, float, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, budgets in (("no budget (baseline)", []), ("one hot budget", [hot_budget()])):
            store = SQLiteStore(Path(folder) / f"{len(budgets)}.sqlite3", group_commit=True)
            for budget in budgets:
                store.apply(budget)
            admission = Admission(
                store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5)
            )
            server = serve(admission, host="127.0.0.1", port=0, tls=None)
            try:
                if budgets:
                    with Settler(store, KEY):
                        rate, p50, p99, allowed = drive(server.server_address[1], seconds)
                else:
                    rate, p50, p99, allowed = drive(server.server_address[1], seconds)
            finally:
                server.shutdown()
                server.server_close()
            if budgets:
                final = store.get(KEY)
                assert isinstance(final, TrustBudget)
                account = final.status.accounts["user:alice"]
                assert audit(final.status) == [], audit(final.status)
                assert account.reserved + account.spent == allowed, "zero overspend"
            rows.append((f"embedded, {name}", rate, p50, p99))
    return rows


def _charge(store: Any, key: BudgetKey, uid: str) -> bool:
    def change(budget: Budget) -> Decision:
        assert isinstance(budget, TrustBudget)
        return admit_trust(
            budget.status,
            budget.spec,
            account="user:alice",
            cost=budget.spec.cost,
            key=uid,
            ref=uid,
            now=system_clock(),
            ttl=timedelta(minutes=5),
        )

    try:
        return bool(
            store.update_status(
                key, change, timeout=5.0, needs_write=lambda d: d.changes_ledger
            ).cost
        )
    except ChargeTimeout:
        return False


def _hammer(store: Any, key: BudgetKey, seconds: float) -> tuple[int, list[float]]:
    """CLIENTS threads charging `key` with fresh uids for `seconds`: (admitted, latencies)."""
    lock = threading.Lock()
    latencies: list[float] = []
    admitted = [0]
    deadline = time.perf_counter() + seconds

    def worker(worker_id: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            ok = _charge(store, key, f"w{worker_id}-{n}")
            n += 1
            with lock:
                latencies.append(time.perf_counter() - start)
                admitted[0] += ok

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted[0], latencies


def in_cluster(seconds: float) -> list[tuple[str, float, float, float]]:
    from kubernetes import config

    from budgetops.store.kube import KubeStore

    harness = load_harness()
    binaries = harness.cached_binaries()
    if binaries is None:
        raise SystemExit("build the control plane first: python hack/control_plane.py build")
    rows = []
    with harness.ControlPlane(binaries) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for name, group in (("one write per charge (baseline)", False), ("group commit", True)):
            api = config.new_client_from_config(str(plane.kubeconfig))
            api.configuration.connection_pool_maxsize = CLIENTS
            store = KubeStore(api, group_commit=group).start()
            budget = TrustBudget.model_validate(
                hot_budget().to_wire() | {"metadata": {"name": f"hot-{int(group)}"}}
            )
            key = BudgetKey.of(store.apply(budget))
            with Settler(store, key):
                admitted, latencies = _hammer(store, key, seconds)
            final = store.get(key)
            store.stop()
            assert isinstance(final, TrustBudget)
            assert audit(final.status) == []
            account = final.status.accounts["user:alice"]
            assert account.reserved + account.spent == admitted, "zero overspend"
            cuts = statistics.quantiles(latencies, n=100)
            rows.append(
                (f"in cluster, {name}", admitted / seconds, cuts[49] * 1000, cuts[98] * 1000)
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    sections = [embedded(args.seconds)]
    if not args.skip_cluster:
        sections.append(in_cluster(args.seconds))
    print(f"{CLIENTS} concurrent clients, {args.seconds:.0f} s each")
    print(f"{'what':<48}{'admissions/s':>14}{'vs baseline':>13}{'p50 ms':>9}{'p99 ms':>9}")
    for rows in sections:
        baseline = rows[0][1]
        for name, rate, p50, p99 in rows:
            print(f"{name:<48}{rate:>14,.0f}{rate / baseline:>12.2f}x{p50:>9.1f}{p99:>9.1f}")


if __name__ == "__main__":
    main()
