"""Admissions per second and latency on one hot budget: embedded webhook, then in cluster.

Embedded: the real webhook server (`budgetops serve`'s code) over the SQLite ledger on
127.0.0.1, driven by wrk (a load generator in C, so that the client takes little of the
CPU the server needs) with 64 keep-alive connections, each POSTing CSR AdmissionReviews
with fresh uids (benchmarks/admission.lua). Measured in the same run: one status write per
charge (the baseline), group commit, the same server with no budget to charge (parse,
classify, answer: the ceiling for this machine), and group commit with one client (the
latency floor: what an admission costs when nothing queues).

In cluster (needs the binaries from hack/control_plane.py): the in-cluster store on one hot
TrustBudget, 64 threads charging it, with group commit and with one status write per
charge, both against the same real API server in the same run. Each run ends with an
overspend check: what was admitted must equal what the status holds.

Needs wrk on PATH (Debian and Ubuntu package it as `wrk`).
Run: python benchmarks/admission.py [--seconds 5] [--skip-cluster | --cluster-only]
[--profile N] (cProfile of every thread of the cluster half, group commit only: the N
costliest functions, by cumulative and by own time) [--keep-keys] (in cluster, keep every
settled key for KEY_KEPT, as for updates; by default the settler confirms as the reconciler
does a created object, whose key is not kept)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.charges import TrustCharge
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import audit, confirm
from budgetops.store import ChargeTimeout
from budgetops.store.sqlite import SERVING_CHECKPOINT_SECONDS, SQLiteStore
from budgetops.usecases.charging import Changes
from cluster import control_plane
from ledger import ThreadProfiles

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


class Settler:
    """Confirms open reservations every 50 ms, as the reconciler's watch will when it sees
    the objects; without it every admission leaves the status one reservation larger.
    `remember` False: as the reconciler confirms an object it saw created in a cluster (a
    CSR is), its key is not kept (`Witness.created`); the embedded ledger keeps every key."""

    def __init__(self, store: Any, key: BudgetKey, *, remember: bool = True) -> None:
        self.store, self.key, self.remember = store, key, remember
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
                    confirm(budget.status, key=uid, now=now, remember=self.remember)
            return Decision(True, "Charged", Decimal(1))

        while not self.stopped.wait(0.05):
            with contextlib.suppress(ChargeTimeout):  # one write per charge may starve it
                self.store.update_status(self.key, settle)


def drive(port: int, seconds: float, clients: int) -> tuple[float, float, float, int]:
    """(admissions/s, p50 ms, p99 ms, admitted) as wrk measured them."""
    run = subprocess.run(
        [
            "wrk",
            "--threads=1",
            f"--connections={clients}",
            f"--duration={seconds:.0f}s",
            "--timeout=10s",
            f"--script={ROOT / 'benchmarks' / 'admission.lua'}",
            f"http://127.0.0.1:{port}/validate?timeout=5s",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    requests, micros, p50, p99, admitted, errors = result.split()[1:]
    assert int(errors) == 0, f"wrk saw {errors} errors:\n{run.stdout}"
    return int(requests) / (int(micros) / 1e6), float(p50), float(p99), int(admitted)


def embedded(seconds: float) -> list[tuple[str, float, float, float]]:
    if shutil.which("wrk") is None:
        raise SystemExit("the embedded benchmark needs wrk on PATH (package `wrk`)")
    rows = []
    runs = (
        ("one write per charge (baseline)", True, False, CLIENTS),
        ("group commit", True, True, CLIENTS),
        ("no budget to charge (ceiling)", False, True, CLIENTS),
        ("group commit, 1 client (latency floor)", True, True, 1),
    )
    with tempfile.TemporaryDirectory() as folder:
        for n, (name, hot, group, clients) in enumerate(runs):
            store = SQLiteStore(  # as `budgetops serve` opens it
                Path(folder) / f"{n}.sqlite3",
                group_commit=group,
                checkpoint_every=SERVING_CHECKPOINT_SECONDS,
            )
            if hot:
                store.apply(hot_budget())
            admission = Admission(
                store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5)
            )
            server = serve(admission, host="127.0.0.1", port=0, tls=None)
            try:
                if hot:
                    with Settler(store, KEY):
                        rate, p50, p99, admitted = drive(server.port, seconds, clients)
                else:
                    rate, p50, p99, admitted = drive(server.port, seconds, clients)
            finally:
                server.close()
            if hot:
                final = store.get(KEY)
                assert isinstance(final, TrustBudget)
                account = final.status.accounts["user:alice"]
                assert audit(final.status) == [], audit(final.status)
                # wrk stops with up to `clients` requests in flight: charged, never heard
                in_flight = account.reserved + account.spent - admitted
                assert 0 <= in_flight <= clients, f"charged minus admitted: {in_flight}"
            rows.append((f"embedded, {name}", rate, p50, p99))
    return rows


def _charge(store: Any, key: BudgetKey, uid: str) -> bool:
    changes = Changes(clock=system_clock, ttl=timedelta(minutes=5))
    change = changes.trust(TrustCharge(key, "user:alice", Decimal(0), uid, uid), own_cost=True)
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


def _cpu_seconds(plane: Any) -> float:
    """CPU seconds the control plane's processes (API server, etcd) have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for process in plane._processes.values():
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def in_cluster(
    seconds: float, profile: int | None = None, *, remember: bool = False
) -> list[tuple[str, float, float, float]]:
    from kubernetes import config

    from budgetops.store.kube import KubeStore

    rows = []
    with control_plane() as plane:
        for name, group in (("one write per charge (baseline)", False), ("group commit", True)):
            api = config.new_client_from_config(str(plane.kubeconfig))
            api.configuration.connection_pool_maxsize = CLIENTS
            profiles = ThreadProfiles() if profile and group else contextlib.nullcontext()
            with profiles:  # its watch thread too
                store = KubeStore(api, group_commit=group).start()
            budget = TrustBudget.model_validate(
                hot_budget().to_wire() | {"metadata": {"name": f"hot-{int(group)}"}}
            )
            key = BudgetKey.of(store.apply(budget))
            if isinstance(profiles, ThreadProfiles):
                profiles.reset()
            ours, theirs = time.process_time(), _cpu_seconds(plane)
            with profiles, Settler(store, key, remember=remember):
                admitted, latencies = _hammer(store, key, seconds)
            ours, theirs = time.process_time() - ours, _cpu_seconds(plane) - theirs
            if isinstance(profiles, ThreadProfiles):  # the watches of idle kinds saw nothing
                profiles.profiles = [p for p in profiles.profiles if p.getstats()]
                profiles.print(profile or 0)
            final = store.get(key)
            store.stop()
            if group:
                writes = store.stats.batches + store.stats.conflicts
                size = len(final.model_dump_json(by_alias=True, exclude_none=True))
                print(
                    f"in cluster, {name}: {writes:,} status writes ({store.stats.conflicts} "
                    f"conflicts, {getattr(store.cache, 'echoes', 0):,} watch echoes not parsed), "
                    f"{admitted / max(1, store.stats.batches):.1f} charges per "
                    f"batch, CPU per write {ours / max(1, writes) * 1000:.2f} ms here and "
                    f"{theirs / max(1, writes) * 1000:.2f} ms in the API server and etcd; "
                    f"the status ends at {size:,} bytes"
                )
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
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--skip-cluster", action="store_true")
    only.add_argument("--cluster-only", action="store_true")
    parser.add_argument("--profile", type=int, metavar="N", help="profile the cluster half")
    parser.add_argument(
        "--keep-keys",
        action="store_true",
        help="in cluster, keep each settled key for 2 minutes, as for an update (a create's "
        "is dropped once the reconciler sees the object)",
    )
    args = parser.parse_args()
    sections = [] if args.cluster_only else [embedded(args.seconds)]
    if not args.skip_cluster:
        sections.append(in_cluster(args.seconds, args.profile, remember=args.keep_keys))
    print(f"{CLIENTS} concurrent clients unless said, {args.seconds:.0f} s each")
    print(f"{'what':<48}{'admissions/s':>14}{'vs baseline':>13}{'p50 ms':>9}{'p99 ms':>9}")
    for rows in sections:
        baseline = rows[0][1]
        for name, rate, p50, p99 in rows:
            print(f"{name:<48}{rate:>14,.0f}{rate / baseline:>12.2f}x{p50:>9.1f}{p99:>9.1f}")


if __name__ == "__main__":
    main()
