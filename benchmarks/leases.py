"""The lease API and the runtime SDK: local checks, batched reporting, handshakes, ingest,
revocation; each figure beside a baseline measured in the same run.

The server is `budgetops serve`'s code (the webhook server with the lease API mounted at
/api/v1, LeaseService over SQLiteStore with group commit) in a process of its own, on a
ledger set up as a user does it: the example TrustBudget applied (its balance raised so
that no part runs out of dollars) and agents created with `budgetops agent create`. The
clients run in this process, so their CPU is measured apart from the server's.

1. `BudgetClient.check` vs an empty method call and a bare Decimal comparison.
2. `record()` with batch_size 10 and 100 reporting to the real server, per record, CPU of
   this process and wall time including the final flush; baseline: the same client whose
   flushes drop the records (no HTTP at all), so the difference is what reporting costs.
3. Handshakes at a fixed offered rate (open loop, a new connection each, latency from the
   scheduled start); baseline: GET /healthz the same way on the same server.
4. Records ingested per second, closed loop: CLIENTS threads, each its own agent and lease,
   posting batches of 100 (baseline: batches of 1; ceiling: /healthz closed loop). Every
   acknowledged record is checked against the lease's `reported_through` afterwards.
5. Revoking 10 agents x 1000 active leases (one budget each, one write per agent) vs one
   unchanged status write per budget of the same size.
6. A handshake and a release, in process (LeaseService on the store `serve` opens, no
   HTTP), in the example budget and in the same budget beside 10,000 other accounts: CPU
   per call and the ratio. A call reads and writes the agent's own account, so the ratio
   should stay near 1 (issue 22: it was 32x while a call re-read the whole budget).
7. With --cluster N: N x 1000 active leases (one agent per TrustBudget, as in 5) held in
   the real API server of hack/control_plane.py, then 10 of the agents revoked as in 5
   (issue 22: 100,000 active leases, revoking 10,000 in under 5 s).

Run: python benchmarks/leases.py [--seconds 5] [--cluster 100]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.adapters.secrets import FileSecrets
from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.agents import Agent
from budgetops.apis.common import SecretKeyRef
from budgetops.apis.leaseprotocol import HandshakeRequest, ReleaseRequest
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.cli.main import main as cli_main
from budgetops.client import BudgetClient
from budgetops.crypto import tokens
from budgetops.engine import agents, leases
from budgetops.engine.clock import system_clock
from budgetops.engine.ledger import audit
from budgetops.engine.rollover import trust_account
from budgetops.leaseapi.app import PREFIX, lease_app
from budgetops.store import BudgetStore
from budgetops.store.commit import stored_size
from budgetops.store.sqlite import SERVING_CHECKPOINT_SECONDS, SQLiteStore
from budgetops.usecases.leasing import LeaseService
from cluster import control_plane

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "trustbudget-llm-spend.yaml"
BUDGET = "agent-llm-spend"
BALANCE = "1000000.00"
PROVIDER_KEY = "sk-bench-provider-key-0123456789"
CLIENTS = 8
RATE = 50.0
PER_AGENT = 900  # handshakes per agent, under the 1000 leases an account keeps


def cli(*argv: str) -> str:
    out = io.StringIO()
    code = cli_main(list(argv), out=out)
    assert code == 0, out.getvalue()
    return out.getvalue()


def ledger(folder: Path, agent_count: int) -> tuple[Path, list[str]]:
    """The example budget (balance raised) and `agent_count` agents made with the CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "ledger.sqlite3"
    example = folder / "budget.yaml"
    example.write_text(EXAMPLE.read_text().replace('"100.00"', f'"{BALANCE}"'))
    cli("apply", "-f", str(example), "--db", str(db))
    FileSecrets(db.with_name(db.name + ".secrets")).write("", "openai", "api-key", PROVIDER_KEY)
    found = []
    for _ in range(agent_count):
        text = cli(
            "agent", "create", "--budget", BUDGET, "--provider", "openai", "--model", "gpt-4",
            "--provider-key-secret", "openai/api-key", "--project", "bench", "--db", str(db),
        )  # fmt: skip
        found.append(dict(line.split(": ", 1) for line in text.splitlines())["token"])
    return db, found


def _server(db: str, pipe: Any) -> None:
    store = SQLiteStore(db, group_commit=True, checkpoint_every=SERVING_CHECKPOINT_SECONDS)
    secrets = FileSecrets(Path(db + ".secrets"))
    service = LeaseService(store, secrets, clock=system_clock)
    admission = Admission(store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    server = serve(
        admission, host="127.0.0.1", port=0, tls=None, mounted={PREFIX: lease_app(service)}
    )
    pipe.send(server.port)
    pipe.recv()  # until told to stop
    server.close()
    store.close()


class Server:
    """`budgetops serve`'s server on a fresh ledger, in a process of its own."""

    def __init__(self, folder: Path, agent_count: int) -> None:
        self.db, self.tokens = ledger(folder, agent_count)
        self.pipe, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_server, args=(str(self.db), theirs))

    def __enter__(self) -> Server:
        self.process.start()
        self.port: int = self.pipe.recv()
        return self

    def __exit__(self, *_: object) -> None:
        self.pipe.send("stop")
        self.process.join()


def request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers=headers)
    reply = connection.getresponse()
    return reply.status, json.loads(reply.read() or b"null")


def handshake_body(token: str, amount: float) -> dict[str, Any]:
    return {"ic_token": token, "requested_budget": amount, "runtime_version": "0.1.0"}


# 1 and 2: the SDK ----------------------------------------------------------------------


class _Empty:
    def check(self, estimated_cost: Decimal) -> None:
        pass


class _Unsent(BudgetClient):
    """Flushes drop the records: record() without any reporting."""

    async def _sync(self, *, drain: bool) -> None:
        self._wake.clear()
        self._take_pending()


def per_call(run: Callable[[], None], loops: int) -> float:
    """Seconds per call of `run`, best of 5 (run makes 100 calls each)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(loops):
            run()
        best = min(best, (time.perf_counter() - start) / (loops * 100))
    return best


async def sdk(port: int, token: str, seconds: float) -> list[tuple[str, float, float]]:
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, float, float]] = []
    estimate = Decimal("0.05")
    async with BudgetClient(url, token, requested_budget=Decimal("1000")) as client:
        check, empty, available = client.check, _Empty().check, client.remaining

        def checks() -> None:
            for _ in range(100):
                check(estimate)

        def empties() -> None:
            for _ in range(100):
                empty(estimate)

        def compares() -> None:
            for _ in range(100):
                _ = available < estimate

        loops = 2000
        rows.append(("empty method call (baseline)", per_call(empties, loops), 0))
        rows.append(("bare Decimal comparison", per_call(compares, loops), 0))
        rows.append(("client.check(estimate)", per_call(checks, loops), 0))
    count = max(2000, int(seconds * 4000))
    cost = Decimal("0.0042")  # sub-cent: the SDK carries it forward
    for name, kind, batch in (
        ("record(), flushes dropped (baseline)", _Unsent, 10),
        ("record(), batch_size 10, real server", BudgetClient, 10),
        ("record(), batch_size 100, real server", BudgetClient, 100),
    ):
        async with kind(url, token, requested_budget=Decimal("1000"), batch_size=batch) as client:
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(count):
                client.record(cost, tokens=1500, model="gpt-4", provider="openai")
                await asyncio.sleep(0)  # a runtime awaits its provider call between records
            await client.flush()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            rows.append((name, cpu / count, wall / count))
    return rows


# 3: handshakes, open loop --------------------------------------------------------------


def open_loop(
    port: int, seconds: float, call: Callable[[int, http.client.HTTPConnection], None]
) -> list[float]:
    """Latencies (s) of `call` at RATE/s, a new connection each, from the scheduled start."""
    total = int(RATE * seconds)
    latencies: list[float] = [0.0] * total
    start = time.perf_counter() + 0.05

    def one(i: int) -> None:
        due = start + i / RATE
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            call(i, connection)
        finally:
            connection.close()
        latencies[i] = time.perf_counter() - due

    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(total):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    return latencies


def handshakes(folder: Path, seconds: float) -> list[tuple[str, float, float]]:
    total = int(RATE * seconds)
    with Server(folder, -(-total // PER_AGENT)) as server:
        agent_tokens = server.tokens

        def health(_: int, connection: http.client.HTTPConnection) -> None:
            status, _ = request(connection, "GET", "/healthz")
            assert status == 200

        def shake(i: int, connection: http.client.HTTPConnection) -> None:
            body = handshake_body(agent_tokens[i // PER_AGENT], 0.01)
            status, answer = request(connection, "POST", PREFIX + "/auth/handshake", body)
            assert status == 200, answer

        rows = []
        for name, call in (("GET /healthz (baseline)", health), ("POST /auth/handshake", shake)):
            cuts = statistics.quantiles(open_loop(server.port, seconds, call), n=100)
            rows.append((name, cuts[49] * 1000, cuts[98] * 1000))
    return rows


# 4: ingest, closed loop ----------------------------------------------------------------


def closed_loop(
    port: int, seconds: float, agent_tokens: list[str], batch: int
) -> tuple[float, float]:
    """(records/s, client CPU as a share of one core); batch 0 is GET /healthz."""
    counts = [0] * len(agent_tokens)
    deadline = [0.0]
    ready = threading.Barrier(len(agent_tokens) + 1)

    def worker(n: int) -> None:
        token = agent_tokens[n]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lease_id = ""
        if batch:
            body = handshake_body(token, 1000)
            status, answer = request(connection, "POST", PREFIX + "/auth/handshake", body)
            assert status == 200, answer
            lease_id = answer["lease_id"]
        ready.wait()
        seq, stamp = 0, int(time.time())
        while time.perf_counter() < deadline[0]:
            if not batch:
                status, _ = request(connection, "GET", "/healthz")
                assert status == 200
                counts[n] += 1
                continue
            reports = [
                {"request_id": f"r{seq + k}", "seq": seq + k, "tokens": 1500, "cost_usd": 0.01,
                 "model": "gpt-4", "provider": "openai", "timestamp": stamp}
                for k in range(1, batch + 1)
            ]  # fmt: skip
            body = {"lease_id": lease_id, "reports": reports}
            status, answer = request(connection, "POST", PREFIX + "/budget/report", body, token)
            assert status == 200, answer
            assert answer["accepted"] == batch, answer
            seq += batch
            counts[n] = seq
        if batch:  # acknowledged means stored: the ledger holds every record
            status, view = request(
                connection, "GET", f"{PREFIX}/budget/leases/{lease_id}", token=token
            )
            assert status == 200, view
            assert view["reported_through"] == seq, view
        connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(agent_tokens))]
    for thread in threads:
        thread.start()
    cpu, start = time.process_time(), time.perf_counter()
    deadline[0] = start + seconds
    ready.wait()  # the deadline is set before any worker passes here
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return sum(counts) / elapsed, (time.process_time() - cpu) / elapsed


def ingest(folder: Path, seconds: float) -> list[tuple[str, float, float]]:
    rows = []
    for name, batch in (("GET /healthz (ceiling, requests/s)", 0), ("batches of 1 (baseline)", 1),
                        ("batches of 100", 100)):  # fmt: skip
        with Server(folder / f"ingest-{batch}", CLIENTS) as server:
            rate, cpu = closed_loop(server.port, seconds, server.tokens, batch)
        rows.append((name, rate, cpu))
    return rows


# 5: revocation -------------------------------------------------------------------------


def lent_out(store: BudgetStore, count: int, first: int = 0) -> list[tuple[BudgetKey, str]]:
    """`count` TrustBudgets (USD), one agent each with LEASES_KEPT active leases, made
    through the engine in one write per budget: (budget, agent) of each."""
    spec = TrustBudget.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {
                "subjects": {"serviceAccounts": ["payments/agent"]},
                "match": [{"group": "budgetops.dev", "resource": "budgetleases"}],
                "initialBalance": BALANCE,
                "resetInterval": "7d",
                "unit": "USD",
            },
        }
    ).to_wire()
    now = system_clock()
    keys: list[tuple[BudgetKey, str]] = []
    for n in range(first, first + count):
        budget = TrustBudget.model_validate(spec | {"metadata": {"name": f"revoke-{n}"}})
        key = BudgetKey.of(store.apply(budget))
        agent_id = tokens.new_agent_id()
        agent = Agent(
            budget_id=tokens.new_budget_id(), token_id=tokens.new_token_id(), issued_at=now,
            expires_at=None, provider="openai", provider_model="gpt-4",
            provider_key=SecretKeyRef(name="openai", key="api-key"), project="bench",
        )  # fmt: skip

        def lend(b: Budget, agent_id: str = agent_id, agent: Agent = agent, n: int = n) -> None:
            assert isinstance(b, TrustBudget)
            agents.add_agent(b.status, b.spec, agent_id=agent_id, agent=agent, now=now)
            for i in range(leases.LEASES_KEPT):
                leases.grant(
                    b.status, account=agent_id, lease_id=f"lease_{n:08d}-0000-4000-8000-{i:012d}",
                    requested=Decimal("10"), now=now, ttl=timedelta(hours=1), holder="gw",
                    agent=agent_id,
                )  # fmt: skip

        store.update_status(key, lend, timeout=60)
        keys.append((key, agent_id))
    return keys


def revoke(store: BudgetStore, keys: list[tuple[BudgetKey, str]]) -> list[tuple[str, float]]:
    """Revoke each agent (one write each, in a row), beside the same number of unchanged
    status writes of the same budgets (the baseline); the ledger is checked after."""
    size = stored_size(store.get(keys[0][0]))
    start = time.perf_counter()
    for key, _ in keys:
        store.update_status(key, lambda b: None, timeout=60)
    unchanged = time.perf_counter() - start
    start = time.perf_counter()
    closed = 0
    for key, agent_id in keys:

        def revoke(b: Budget, agent_id: str = agent_id) -> int:
            assert isinstance(b, TrustBudget)
            return agents.revoke(b.status, agent_id=agent_id, now=system_clock())

        closed += store.update_status(key, revoke, timeout=60)
    revoked = time.perf_counter() - start
    assert closed == len(keys) * leases.LEASES_KEPT, closed
    for key, agent_id in keys:
        final = store.get(key)
        assert isinstance(final, TrustBudget)
        assert audit(final.status) == [], audit(final.status)
        account = final.status.accounts[agent_id]
        assert account.leased_out == 0
        assert all(h.state == "revoked" for h in account.leases.values())
    count = len(keys)
    return [
        (f"{count} unchanged status writes of {size / 1024:.0f} KiB (baseline)", unchanged),
        (f"revoke {count} agents x {leases.LEASES_KEPT} active leases", revoked),
    ]


def revocation(folder: Path) -> list[tuple[str, float]]:
    store = SQLiteStore(folder / "revoke.sqlite3", group_commit=True)
    try:
        return revoke(store, lent_out(store, 10))
    finally:
        store.close()


# 7: in a cluster -----------------------------------------------------------------------


def in_cluster(budgets: int) -> tuple[float, list[tuple[str, float]]]:
    """`budgets` x LEASES_KEPT active leases in the real API server (seconds to lend
    them), then 10 of the agents revoked (`revoke`)."""
    from kubernetes import config

    from budgetops.store.kube import KubeStore

    with control_plane() as plane:
        store = KubeStore(config.new_client_from_config(str(plane.kubeconfig))).start()
        try:
            start = time.perf_counter()
            keys = lent_out(store, budgets)
            lending = time.perf_counter() - start
            return lending, revoke(store, keys[:10])
        finally:
            store.stop()


# 6: a lease call beside many accounts -----------------------------------------------


def _crowded(db: Path, others: int) -> None:
    """Open `others` accounts in the budget (5,000 per write), as charges would."""
    store = SQLiteStore(db)
    key, now = BudgetKey("TrustBudget", BUDGET), system_clock()
    for start in range(0, others, 5000):

        def open_accounts(b: Budget, start: int = start) -> None:
            assert isinstance(b, TrustBudget)
            for n in range(start, min(others, start + 5000)):
                trust_account(b.status, b.spec, key=f"user:u{n}", now=now)

        store.update_status(key, open_accounts)
    store.close()


def crowded_calls(folder: Path, others: int, calls: int = 200) -> float:
    """CPU seconds per lease call (a handshake or a release) beside `others` accounts."""
    db, (token,) = ledger(folder, 1)
    _crowded(db, others)
    store = SQLiteStore(db, group_commit=True, checkpoint_every=SERVING_CHECKPOINT_SECONDS)
    service = LeaseService(store, FileSecrets(Path(f"{db}.secrets")), clock=system_clock)

    async def calls_of(pairs: int) -> None:
        for _ in range(pairs):
            lent = await service.handshake(
                HandshakeRequest.model_validate(handshake_body(token, 10))
            )
            await service.release(token, ReleaseRequest.model_validate(lent))

    asyncio.run(calls_of(10))  # warm: the budget parsed once, the signing key read
    cpu = time.process_time()
    asyncio.run(calls_of(calls // 2))
    taken = (time.process_time() - cpu) / calls
    store.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cluster", type=int, help="only part 7, with this many budgets")
    args = parser.parse_args()
    if args.cluster:
        lending, rows = in_cluster(args.cluster)
        held = args.cluster * leases.LEASES_KEPT
        print(f"7. in a cluster: {held:,} active leases lent in {lending:.1f} s (target: held)")
        for name, took in rows:
            print(f"   {name:<44}{took:>8.3f} s{took / rows[0][1]:>8.2f}x")
        return
    seconds = args.seconds
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with Server(folder / "sdk", 1) as server:
            sdk_rows = asyncio.run(sdk(server.port, server.tokens[0], seconds))
        shake_rows = handshakes(folder / "handshake", seconds)
        ingest_rows = ingest(folder, seconds)
        revoke_rows = revocation(folder)
        crowd_rows = [(n, crowded_calls(folder / f"crowd-{n}", n)) for n in (0, 10_000)]

    print("1. local check (target < 5 us)")
    base = sdk_rows[0][1]
    for name, each, _ in sdk_rows[:3]:
        print(f"   {name:<44}{each * 1e9:>10.0f} ns{each / base:>9.2f}x")
    print("2. record() per call, CPU of this process and wall, incl. the flush (target < 50 us)")
    base = sdk_rows[3][1]
    for name, cpu, wall in sdk_rows[3:]:
        print(f"   {name:<44}{cpu * 1e6:>7.1f} us CPU{wall * 1e6:>8.1f} us wall{cpu / base:>7.2f}x")
    print(f"3. open loop at {RATE:.0f}/s, new connection each (target handshake p50 < 10 ms)")
    for name, p50, p99 in shake_rows:
        print(f"   {name:<44}p50 {p50:>6.1f} ms  p99 {p99:>6.1f} ms{p50 / shake_rows[0][1]:>7.2f}x")
    print(f"4. closed loop, {CLIENTS} clients (target >= 5,000 records/s)")
    base = ingest_rows[1][1]
    for name, rate, cpu in ingest_rows:
        print(f"   {name:<44}{rate:>10,.0f}/s{rate / base:>8.2f}x  client CPU {cpu:.0%} of a core")
    print("5. revocation (target < 5 s)")
    base = revoke_rows[0][1]
    for name, took in revoke_rows:
        print(f"   {name:<44}{took:>8.3f} s{took / base:>8.2f}x")
    print("6. a lease call beside other accounts, CPU per call (target: the same)")
    base = crowd_rows[0][1]
    for others, cpu in crowd_rows:
        name = f"beside {others:,} other accounts"
        print(f"   {name:<44}{cpu * 1e3:>7.2f} ms CPU{cpu / base:>8.2f}x")


if __name__ == "__main__":
    main()
