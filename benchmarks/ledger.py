"""The ledger at organisation scale (issue 22): does a charge cost the same in a budget of 10
accounts or 100,000?

Every part runs on a fresh embedded ledger opened as `budgetops serve` opens it (group
commit, background checkpoints) and charges it as admission does: the change
`Changes.trust` builds for one CertificateSigningRequest, handed to the store's
`update_status` from `--clients` threads (see `drive`). Only public APIs are used, so the
same file measures whatever layout the store keeps the ledger in.

1. Distinct accounts: one TrustBudget (`accountKey: user:${username}`), one charge from
   each of N users. The rate is timed over the last 1,000 charges, once the budget holds
   N - 1,000 accounts (charged beforehand through the store, untimed, in big batches); a
   smaller N is charged in 1,000 / N budgets one after the other (see `distinct`), all
   in one ledger, whose file size is then theirs together. Each charge is confirmed in
   the change that makes it (`settle`, as the webhook settles what no watch will see
   later): one status change per charge, all at one instant (`frozen`). Afterwards: the
   largest value and the largest row in any table of the SQLite file, and its size.
2. Hot account: one user at full speed, admitted as the webhook admits a CSR (reserved);
   what was admitted is confirmed apart, every 50 ms in one change, as a watch confirms
   the objects it sees (`Settler`, like benchmarks/admission.py's). The ceiling is the same
   harness calling `update_status` on a budget with a change that writes nothing; the
   harness alone (a call that does nothing) is shown too.
3. Volume: `--volume` charges (each confirmed in its own change, as in part 1) in one
   window of one budget from 1,000 users whose balance covers twice their share, so no
   refusal is explained by the balance; then 1,000 of the keys, picked at random, are
   charged again and must each be AlreadyCharged. Every charge happens at one instant
   (a frozen clock, as in part 1), well within the time a key is remembered, so every
   key must still be known.
4. Reconciler: `budgetops serve`'s reconciler (its ledger watch and scheduler) keeps a
   budget of N accounts (preloaded as in part 1) while one client charges it as fast as
   it can with a pause of 10 ms after each charge, for `--seconds` x 10: the share of
   the time spent in reconcile passes and the charges made per second, against N = 1,000
   in the same run. A pass reads every account, so its length grows with N; the
   scheduler's PASS_SHARE keeps a budget charged all the time from being reconciled most
   of the time.

Run: python benchmarks/ledger.py [--accounts 10,1000,10000,100000] [--clients 8]
     [--seconds 3] [--volume 1000000] [--parts distinct,hot,volume,reconciler] [--quick]
     [--profile N] [--profile-hot]
`--quick` (N = 10 and 1,000, 1 s hot runs, 20,000 charges of volume) is a smoke test.
`--profile N` profiles the timed segment at N accounts in every thread (group commit
writes from its own threads) and prints where the time went; `--profile-hot` the hot
account's row at --clients (profiled, so its own numbers are slower).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import math
import os
import pstats
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.apis.ledger import Witness
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.charges import TrustCharge
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision
from budgetops.store.sqlite import SERVING_CHECKPOINT_SECONDS, SQLiteStore
from budgetops.usecases.charging import Changes

KEY = BudgetKey("TrustBudget", "developer-certificates")
IDLE = BudgetKey("TrustBudget", "idle")
COST = Decimal(1)
TTL = timedelta(minutes=5)
SEGMENT = 1_000
"""Charges timed at each N: the last ones, or those of SEGMENT / N budgets (`distinct`)."""
PRELOAD_BATCH = 10_000
"""Accounts opened per status change before the timed segment (untimed)."""
TIMEOUT = 600.0
"""Seconds a charge may wait: generous, so that a slow layout is measured, not refused."""
VOLUME_USERS = 1_000
REPLAYS = 1_000
SETTLE_EVERY = 0.05
TARGET_RATIO = 0.8
TARGET_LARGEST = 64 * 1024
TARGET_HOT_RATIO = 0.6
TARGET_P99_MS = 3.0
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def trust_budget(name: str, balance: int) -> TrustBudget:
    """The spec of docs/examples/trustbudget-certificates.yaml, under another name and
    balance."""
    return TrustBudget.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "subjects": {
                    "groups": ["developers"],
                    "exclude": {"groups": ["system:nodes", "system:bootstrappers"]},
                },
                "accountKey": "user:${username}",
                "match": [
                    {
                        "group": "certificates.k8s.io",
                        "resource": "certificatesigningrequests",
                        "operations": ["CREATE"],
                    },
                    {"group": "cert-manager.io", "resource": "certificaterequests"},
                ],
                "cost": 1,
                "initialBalance": balance,
                "resetInterval": "24h",
                "unit": "points",
                "alerts": {
                    "lowBalancePercent": 20,
                    "exhaustion": True,
                    "rapidDepletion": {"percent": 50, "within": "1h"},
                },
                "enforcement": "enforce",
                "breakGlass": {
                    "subjects": {"groups": ["oncall"]},
                    "maxCertificateTTL": "1h",
                    "rateLimit": {"count": 3, "per": "24h"},
                    "requireReason": True,
                },
            },
        }
    )


def uid(i: int, run: int = 0) -> str:
    """The uid of the i-th CSR: shaped like the API server's, the same on every call."""
    return str(uuid.UUID(int=(run << 64) | i))


def csr(user: str, i: int, *, budget: BudgetKey = KEY, run: int = 0) -> TrustCharge:
    """What admission charges to `budget` for the i-th CSR, created by `user`."""
    key = uid(i, run)
    name = f"{user}-{i}"
    return TrustCharge(
        budget,
        f"user:{user}",
        COST,
        key,
        f"CertificateSigningRequest/{name}",
        witness=Witness(path=f"{CSRS}/{name}", uid=key),
    )


def frozen() -> Changes:
    """Charges all made at one instant: however long a slow layout takes, the budget then
    holds every key and every account it charged, which are what a charge must not pay for."""
    now = system_clock()
    return Changes(clock=lambda: now, ttl=TTL)


def writes(decision: Decision) -> bool:
    """What admission tells the store: only a charge (or a break-glass use) is written."""
    return decision.changes_ledger


# The harness ------------------------------------------------------------------------------


@dataclass
class Run:
    """What `drive` measured: calls done, wall time, each call's latency, and the CPU time
    of the whole process meanwhile (seconds). The machine is shared: CPU per call moves
    less than the rate when others take the cores."""

    count: int
    elapsed: float
    latencies: list[float] = field(repr=False)
    cpu: float

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per call, every thread of the process included."""
        return 1000 * self.cpu / self.count

    def ms(self, quantile: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def drive(
    work: Callable[[int], object],
    *,
    clients: int,
    count: int | None = None,
    seconds: float | None = None,
) -> Run:
    """Call work(0), work(1), ... from `clients` threads (closed loop, each waits for its
    answer) until `count` calls are made or `seconds` have passed. Threads start behind a
    barrier; the time is from the barrier to the last answer. The first error stops all
    threads and is raised."""
    numbers = itertools.count()
    per_thread: list[list[float]] = [[] for _ in range(clients)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)
    stop = [math.inf]

    def client(latencies: list[float]) -> None:
        barrier.wait()
        try:
            while time.perf_counter() < stop[0]:
                i = next(numbers)
                if count is not None and i >= count:
                    return
                start = time.perf_counter()
                work(i)
                latencies.append(time.perf_counter() - start)
        except BaseException as error:
            failures.append(error)
            stop[0] = 0.0

    threads = [threading.Thread(target=client, args=(mine,)) for mine in per_thread]
    for thread in threads:
        thread.start()
    start, cpu = time.perf_counter(), time.process_time()
    if seconds is not None:
        stop[0] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if failures:
        raise failures[0]
    latencies = [latency for mine in per_thread for latency in mine]
    return Run(len(latencies), elapsed, latencies, cpu)


@contextmanager
def ledger(*budgets: Budget) -> Iterator[tuple[SQLiteStore, Path]]:
    """A fresh ledger holding `budgets`, opened as `budgetops serve` opens it."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as folder:
        path = Path(folder) / "ledger.sqlite3"
        store = SQLiteStore(path, group_commit=True, checkpoint_every=SERVING_CHECKPOINT_SECONDS)
        try:
            for budget in budgets:
                store.apply(budget)
            yield store, path
        finally:
            store.close()


def load() -> str:
    """The 1, 5 and 15 minute load averages: two cores, shared with other work."""
    return ", ".join(f"{average:.2f}" for average in os.getloadavg())


def progress(text: str) -> None:
    print(f"  ... {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


# What the file holds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """The largest value (and where) and the largest row any table holds, and the sizes
    of the file and of its write-ahead log (as large as the most written between two
    checkpoints)."""

    value: int
    value_at: str
    row: int
    file: int
    wal: int


def footprint(path: Path) -> Footprint:
    """Measured through SQLite's own catalogue, whatever tables the ledger has: in bytes,
    every text or blob value, and every row as the sum of its values."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        value, value_at, row = 0, "-", 0
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            columns = [column[1] for column in db.execute(f'PRAGMA table_info("{table}")')]
            sizes = [f'coalesce(length(CAST("{column}" AS BLOB)), 0)' for column in columns]
            found = db.execute(
                f"SELECT {', '.join(f'max({size})' for size in sizes)}, max({' + '.join(sizes)}) "
                f'FROM "{table}"'
            ).fetchone()
            for column, largest in zip(columns, found[:-1], strict=True):
                if (largest or 0) > value:
                    value, value_at = largest, f"{table}.{column}"
            row = max(row, found[-1] or 0)
    finally:
        db.close()
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    return Footprint(value, value_at, row, path.stat().st_size, wal_size)


# Profiles ---------------------------------------------------------------------------------


class ThreadProfiles:
    """cProfile in every thread started while installed: group commit writes from threads
    of its own, which a profile of the calling thread would not see."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def _start(self, *_: Any) -> None:
        profile = cProfile.Profile()
        self.profiles.append(profile)
        profile.enable()  # replaces this function as the thread's profiler

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start)
        return self

    def __exit__(self, *_: object) -> None:
        threading.setprofile(None)

    def reset(self) -> None:
        """Forget what was seen so far (the threads' own profilers keep running)."""
        for profile in self.profiles:
            profile.clear()

    def print(self, top: int) -> None:
        stats = pstats.Stats(*self.profiles)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)


# 1. Distinct accounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    """One N's timed charges and what the file held after them."""

    run: Run
    footprint: Footprint


def preload(store: SQLiteStore, changes: Changes, count: int) -> None:
    """Open `count` accounts, a charge each, through the store in big untimed batches."""
    for start in range(0, count, PRELOAD_BATCH):
        batch = [
            changes.trust(csr(f"u{i:06d}", i), settle=True)
            for i in range(start, min(start + PRELOAD_BATCH, count))
        ]

        def charge_all(budget: Budget, batch: list[Callable[[Budget], Decision]] = batch) -> int:
            return sum(change(budget).cost == COST for change in batch)

        charged = store.update_status(KEY, charge_all, timeout=TIMEOUT)
        assert charged == len(batch), (charged, len(batch))
        progress(f"{start + len(batch):,} of {count:,} accounts opened")


def distinct(n: int, clients: int, profile: bool) -> Accounts:
    """The rate of the last SEGMENT charges of N users. Below SEGMENT, the ledger holds
    SEGMENT / N budgets, charged one after the other in one timed run: every charge lands
    in a budget of fewer than N accounts, and the run is as long as at any other N (ten
    runs of ten charges would measure threads starting and draining)."""
    timed = min(n, SEGMENT)
    budgets = [KEY]
    if n < SEGMENT:
        budgets = [BudgetKey(KEY.kind, f"{KEY.name}-{b}") for b in range(math.ceil(SEGMENT / n))]
    changes = frozen()
    with (
        ThreadProfiles() if profile else nullcontext() as profiles,
        ledger(*(trust_budget(key.name, 100) for key in budgets)) as (store, path),
    ):
        preload(store, changes, n - timed)
        if profiles is not None:
            profiles.reset()

        def charge(i: int) -> None:
            b, j = divmod(i, timed)
            user = n - timed + j
            change = changes.trust(csr(f"u{user:06d}", user, budget=budgets[b], run=b), settle=True)
            decision = store.update_status(budgets[b], change, timeout=TIMEOUT, needs_write=writes)
            assert decision.cost == COST, (i, decision)

        run = drive(charge, clients=clients, count=timed * len(budgets))
        if profiles is not None:
            profiles.print(25)
        return Accounts(run, footprint(path))


def report_distinct(sizes: list[int], clients: int, profile: int | None) -> None:
    """Each N's rate and CPU per charge, both as ratios to the first N's (a ratio of CPU
    time moves less than one of rates while others load the machine), and the file."""
    print(f"\n1. Distinct accounts: one charge from each of N users, {clients} clients")
    print(
        f"{'N':>8}{'charges/s':>11}{f'vs N={sizes[0]}':>9}{'p99 ms':>8}{'CPU ms':>8}"
        f"{'(ratio)':>9}{'largest value':>15}{'largest row':>13}{'file':>10}{'WAL':>10}"
        "  largest value in"
    )
    first: Run | None = None
    for n in sizes:
        result = distinct(n, clients, profile == n)
        run, found = result.run, result.footprint
        first = first or run
        print(
            f"{n:>8,}{run.rate:>11,.0f}{run.rate / first.rate:>8.2f}x{run.ms(0.99):>8.1f}"
            f"{run.cpu_ms:>8.2f}{first.cpu_ms / run.cpu_ms:>8.2f}x"
            f"{found.value / 1024:>12,.1f} KB{found.row / 1024:>10,.1f} KB"
            f"{found.file / 2**20:>7,.1f} MB{found.wal / 2**20:>7,.1f} MB  {found.value_at}",
            flush=True,
        )
    print(
        f"targets: at the largest N >= {TARGET_RATIO}x the rate at the first N; the largest "
        f"value < {TARGET_LARGEST // 1024} KB at every N"
    )


# 2. Hot account ---------------------------------------------------------------------------


class Settler:
    """Confirms what was admitted every SETTLE_EVERY seconds in one change, as a watch
    does once it sees the objects; without it every admission would leave the status one
    reservation larger."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.admitted: list[str] = []
        self.confirmed = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Settler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._thread.join()
        self.settle()

    def add(self, key: str) -> None:
        with self._lock:
            self.admitted.append(key)

    def settle(self) -> None:
        with self._lock:
            keys, self.admitted = self.admitted, []
        if not keys:
            return
        now = system_clock()
        confirms = [Changes.confirm(key, now) for key in keys]

        def confirm_all(budget: Budget) -> int:
            return sum(confirm(budget) for confirm in confirms)

        done = self.store.update_status(KEY, confirm_all, timeout=TIMEOUT, needs_write=bool)
        assert done == len(keys), (done, len(keys))
        self.confirmed += done

    def _run(self) -> None:
        while not self._stopped.wait(SETTLE_EVERY):
            self.settle()


def hot(clients: int, seconds: float) -> Run:
    """One user charging as fast as `clients` threads can, settled by a Settler."""
    changes = Changes(clock=system_clock, ttl=TTL)
    run_id = random.getrandbits(32)
    with ledger(trust_budget(KEY.name, 1_000_000_000)) as (store, _), Settler(store) as settler:

        def charge(i: int) -> None:
            charge = csr("hot", i, run=run_id)
            decision = store.update_status(KEY, changes.trust(charge), needs_write=writes)
            assert decision.cost == COST, (i, decision)
            settler.add(charge.key)

        result = drive(charge, clients=clients, seconds=seconds)
    assert settler.confirmed == result.count, (settler.confirmed, result.count)
    return result


def ceiling(clients: int, seconds: float) -> Run:
    """`update_status` through the same harness, on a budget, with a change that writes
    nothing: the store's group commit, transaction and read, without a charge."""
    with ledger(trust_budget(IDLE.name, 100)) as (store, _):
        return drive(
            lambda _: store.update_status(IDLE, lambda budget: False, needs_write=bool),
            clients=clients,
            seconds=seconds,
        )


def report_hot(clients: int, seconds: float, profile: bool = False) -> None:
    """Each row's rate and CPU per call as ratios to the ceiling's; with `profile`, where
    the time of the hot account at `clients` clients went, in every thread."""
    print(f"\n2. Hot account: one user at full speed, {seconds:g} s per row")
    top = ceiling(clients, seconds)
    with ThreadProfiles() if profile else nullcontext() as profiles:
        many = hot(clients, seconds)
    if profiles is not None:
        profiles.print(40)
    rows = [
        (f"update_status writing nothing, {clients} clients (ceiling)", top, ""),
        (
            f"harness alone, a call doing nothing, {clients} clients",
            drive(lambda _: None, clients=clients, seconds=seconds),
            "",
        ),
        (f"hot account, {clients} clients", many, f">= {TARGET_HOT_RATIO}x"),
        ("hot account, 1 client", hot(1, seconds), f"p99 < {TARGET_P99_MS:g} ms"),
    ]
    print(
        f"{'what':<56}{'calls/s':>11}{'vs ceiling':>12}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms':>8}"
        f"{'(ratio)':>9}  target"
    )
    for name, run, target in rows:
        print(
            f"{name:<56}{run.rate:>11,.0f}{run.rate / top.rate:>11.3f}x"
            f"{run.ms(0.5):>8.2f}{run.ms(0.99):>8.2f}{run.cpu_ms:>8.3f}"
            f"{top.cpu_ms / max(run.cpu_ms, 1e-9):>8.3f}x  {target}"
        )


# 3. Volume --------------------------------------------------------------------------------


def volume(count: int, clients: int) -> None:
    print(f"\n3. Volume: {count:,} charges in one window of one budget, {VOLUME_USERS:,} users")
    changes = frozen()
    refused: dict[str, int] = {}
    lock = threading.Lock()
    # Each user's balance covers twice its share: not one refusal is explained by it.
    balance = 2 * math.ceil(count / VOLUME_USERS)
    with ledger(trust_budget(KEY.name, balance)) as (store, _):

        def charge(i: int) -> Decision:
            change = changes.trust(csr(f"v{i % VOLUME_USERS:04d}", i), settle=True)
            return store.update_status(KEY, change, timeout=TIMEOUT, needs_write=writes)

        def admit(i: int) -> None:
            decision = charge(i)
            if decision.cost != COST:
                with lock:
                    refused[decision.reason] = refused.get(decision.reason, 0) + 1
            if i % 10_000 == 9_999:
                progress(f"{i + 1:,} charges sent")

        run = drive(admit, clients=clients, count=count)
        picked = random.Random(22).sample(range(count), min(REPLAYS, count))
        recharged: list[Decision] = []

        def replay(j: int) -> None:
            decision = charge(picked[j])
            if decision.reason != "AlreadyCharged" or decision.cost != 0:
                recharged.append(decision)

        replays = drive(replay, clients=clients, count=len(picked))
    print(
        f"{count:,} charges in {run.elapsed:,.1f} s: {run.rate:,.0f}/s, p99 "
        f"{run.ms(0.99):.1f} ms, {run.cpu_ms:.2f} CPU ms each; refusals the balance does "
        f"not explain: {sum(refused.values())} {refused or ''}(target 0)"
    )
    print(
        f"{len(picked):,} replays of random keys in {replays.elapsed:,.1f} s "
        f"({replays.rate:,.0f}/s, {replays.cpu_ms:.2f} CPU ms each); not answered "
        f"AlreadyCharged at no cost: {len(recharged)} (target 0)"
    )


# ------------------------------------------------------------------------------------------


# 4. Reconciler ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kept:
    """A budget charged while `serve`'s reconciler keeps it."""

    passes: list[float]
    charges: int
    elapsed: float


def kept(n: int, seconds: float) -> Kept:
    """Charge a budget of `n` accounts for `seconds`, one client, while it is reconciled."""
    from prometheus_client import CollectorRegistry

    from budgetops.observability.events import LogEvents
    from budgetops.reconciling.embedded import LedgerWatch, embedded_reconciler, keep_ledger

    with ledger(trust_budget(KEY.name, 1_000_000)) as (store, _):
        preload(store, frozen(), n)
        reconciler = embedded_reconciler(
            store, LogEvents(), CollectorRegistry(), clock=system_clock
        )
        passes: list[float] = []
        reconcile = reconciler.reconcile

        def timed(key: BudgetKey) -> timedelta | None:
            start = time.perf_counter()
            try:
                return reconcile(key)
            finally:
                passes.append(time.perf_counter() - start)

        reconciler.reconcile = timed  # type: ignore[method-assign]
        stop = threading.Event()
        keeper = threading.Thread(target=keep_ledger(reconciler, LedgerWatch(store)), args=(stop,))
        keeper.start()
        changes = Changes(clock=system_clock, ttl=TTL)
        try:
            while not passes:  # the pass every budget gets at start is not counted
                time.sleep(0.05)
            passes.clear()
            charged, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                change = changes.trust(csr(f"u{charged % n:06d}", n + charged), settle=True)
                decision = store.update_status(KEY, change, needs_write=writes)
                assert decision.cost == COST, decision
                charged += 1
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
        finally:
            stop.set()
            keeper.join()
        return Kept(list(passes), charged, elapsed)


def report_reconciler(sizes: list[int], seconds: float) -> None:
    print("\n4. reconciler: one client charging (10 ms pause each) while serve's reconciler runs")
    heads = ("N", "passes", "mean pass s", "reconciling", "charges/s", "vs 1,000")
    print(" ".join(f"{head:>12}" for head in heads))
    base = None
    for n in [1_000, *[n for n in sizes if n > 1_000]]:
        run = kept(n, seconds)
        rate = run.charges / run.elapsed
        base = base or rate
        mean = sum(run.passes) / len(run.passes) if run.passes else 0.0
        share = sum(run.passes) / run.elapsed
        cells = (f"{n:,}", len(run.passes), f"{mean:.2f}", f"{share:.0%}", f"{rate:.0f}")
        print(" ".join(f"{cell:>12}" for cell in cells), f"{rate / base:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", default="10,1000,10000,100000")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="of each hot-account row")
    parser.add_argument("--volume", type=int, default=1_000_000)
    parser.add_argument("--parts", default="distinct,hot,volume")
    parser.add_argument("--quick", action="store_true", help="a smoke test: small everything")
    parser.add_argument("--profile", type=int, help="profile the segment at this N")
    parser.add_argument(
        "--profile-hot", action="store_true", help="profile the hot account at --clients"
    )
    args = parser.parse_args()
    if args.quick:
        args.accounts, args.seconds, args.volume = "10,1000", 1.0, 20_000
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    print(f"load average at the start: {load()}")
    if "distinct" in parts:
        sizes = [int(n) for n in args.accounts.split(",")]
        report_distinct(sizes, args.clients, args.profile)
    if "hot" in parts:
        report_hot(args.clients, args.seconds, args.profile_hot)
    if "volume" in parts:
        volume(args.volume, args.clients)
    if "reconciler" in parts:
        report_reconciler([int(n) for n in args.accounts.split(",")], args.seconds * 10)
    print(f"\n{time.perf_counter() - started:,.0f} s in all; load average at the end: {load()}")


if __name__ == "__main__":
    main()
