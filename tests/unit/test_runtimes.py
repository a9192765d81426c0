"""Runtimes end to end: the real SDK spending one agent's budget through the real lease API
over the embedded ledger, concurrently and through an outage."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetops.admission.server import WebhookServer, serve
from budgetops.client import BudgetClient, BudgetExceeded, BudgetExhausted, ClientOptions
from budgetops.engine import ledger
from tests import leases
from tests.leases import LeaseApi, create_agent, lease_api

MICRO = Decimal("0.000001")
"""What the SDK reports a call to: its exact cost, rounded up to the micro-dollar."""
ALLOCATION = Decimal("100.00")
ESTIMATE = Decimal("0.05")
MAX_COST = Decimal("0.1000")
RUNTIMES = 20


def cost_of(rng: random.Random) -> Decimal:
    """A call's exact cost: 0.0001 to 0.1000 USD, four decimals."""
    return Decimal(rng.randint(1, 10_000)) / 100_000


async def spend_until_exhausted(
    client: BudgetClient, rng: random.Random, by_lease: dict[str, Decimal]
) -> int:
    """Provider calls estimated at ESTIMATE until the budget is exhausted; the exact cost of
    each is added to the lease it was charged to. Returns the number of calls."""
    calls = 0
    while True:
        cost = cost_of(rng)
        estimate = ESTIMATE
        try:
            async with client.spend(estimate) as usage:
                await asyncio.sleep(0)  # the provider call
                lease_id = client.lease_id
                assert lease_id is not None
                usage.record(cost, tokens=100, model="gpt-4", provider="openai")
        except BudgetExhausted:
            return calls
        except BudgetExceeded:
            await asyncio.sleep(0.002)  # a refresh is on its way
            continue
        by_lease[lease_id] += cost
        calls += 1


def test_twenty_runtimes_spend_one_budget_exactly(tmp_path: Path) -> None:
    with lease_api(tmp_path) as api:
        agent_id, token = create_agent(api.db)
        url = f"http://127.0.0.1:{api.port}"
        by_lease: dict[str, Decimal] = defaultdict(Decimal)

        async def run() -> list[int]:
            clients = [
                BudgetClient(
                    url,
                    token,
                    requested_budget=Decimal("2.00"),
                    refresh_threshold=Decimal("0.50"),
                    batch_size=5,
                    queue_path=tmp_path / f"runtime-{n}.jsonl",
                    runtime_id=f"runtime-{n}",
                )
                for n in range(RUNTIMES)
            ]
            for client in clients:
                await client.start()
            try:
                calls = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            spend_until_exhausted(client, random.Random(n), by_lease)
                            for n, client in enumerate(clients)
                        )
                    ),
                    timeout=10,
                )
            finally:
                for client in clients:
                    await client.close()
            return calls

        calls = asyncio.run(run())
        check_the_ledger(api, agent_id, token, by_lease, sum(calls))


def check_the_ledger(
    api: LeaseApi, agent_id: str, token: str, by_lease: dict[str, Decimal], calls: int
) -> None:
    budget = api.budget()
    assert ledger.audit(budget.status) == []
    account = budget.status.accounts[agent_id]
    assert account.allocation == ALLOCATION
    assert account.spent <= ALLOCATION
    assert account.spent + account.balance + account.leased_out + account.reserved == ALLOCATION
    assert account.leased_out == 0
    counted = Decimal(0)
    overdrawn = Decimal(0)
    for lease_id, exact in by_lease.items():
        status, view, text = api.call("GET", f"/budget/leases/{lease_id}", token=token)
        assert status == 200, text
        assert view["status"] == "released"
        reported = exact.quantize(MICRO, rounding=ROUND_CEILING)
        # what a lease could not cover is what was reported past its grant
        assert view["spent"] == min(reported, view["granted"]), (lease_id, exact, view)
        counted += view["spent"]
        overdrawn += max(exact - view["granted"], Decimal(0))
        # one call in flight per runtime, let through only while the lease had its estimate
        # left: a lease is overdrawn by at most one call's cost
        assert exact - view["granted"] <= MAX_COST
    assert counted == account.spent
    local = sum(by_lease.values(), Decimal(0))
    print(
        f"calls {calls} leases {len(by_lease)} local {local} counted {counted} "
        f"overdrawn {overdrawn} balance {account.balance}"
    )
    # the local total passes the server's only by what leases could not cover, and that
    # is at most one call in flight per lease
    assert local - counted <= overdrawn <= MAX_COST * len(by_lease)


@contextmanager
def lease_api_on(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[LeaseApi]:
    """tests.leases.lease_api over the ledger in `tmp_path` again, on a given port: the same
    API restarted where its runtimes expect it."""

    def on_port(*args: Any, **kwargs: Any) -> WebhookServer:
        return serve(*args, **(kwargs | {"port": port}))

    with monkeypatch.context() as patch:
        patch.setattr(leases, "serve", on_port)
        with lease_api(tmp_path) as api:
            yield api


def options(queue: Path) -> ClientOptions:
    return {
        "queue_path": queue,
        "requested_budget": Decimal("10.00"),
        "refresh_threshold": Decimal("0.50"),
        "batch_size": 5,
        "retries": 1,
        "backoff": 0.01,
        "drain_interval": 0.05,
        "timeout": 2.0,
    }


def spend(client: BudgetClient, rng: random.Random, calls: int) -> Decimal:
    """Calls that check() lets through, recorded; their exact total."""
    total = Decimal(0)
    for _ in range(calls):
        client.check(ESTIMATE)
        cost = cost_of(rng)
        client.record(cost, tokens=100, model="gpt-4", provider="openai")
        total += cost
    return total


def test_an_outage_is_bridged_by_the_lease_and_the_file_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API stops, the runtime goes on spending its lease and queues its reports to the
    file; the API restarts on the same port over the same ledger, the queue drains, and a
    replay of the queue by a restarted runtime counts nothing more."""
    queue = tmp_path / "runtime.jsonl"
    rng = random.Random(7)

    async def run() -> None:
        with lease_api(tmp_path) as api:
            agent_id, token = create_agent(api.db)
            port = api.port
            client = BudgetClient(f"http://127.0.0.1:{port}", token, **options(queue))
            await client.start()
            try:
                lease_id = client.lease_id
                exact = spend(client, rng, 20)
                await client.flush()
                assert api.account(agent_id).spent == exact.quantize(MICRO, ROUND_CEILING)
            except BaseException:
                await client.close()
                raise
        try:
            # the API is gone: check() answers from the lease, records are taken
            for _ in range(4):
                exact += spend(client, rng, 5)
                await asyncio.sleep(0.05)  # the pump tries, fails, queues
            await client.flush()  # and again: every record waits in the file
            queued = queue.read_text().splitlines()
            assert len(queued) == 20
            assert client.lease_id == lease_id  # no refresh was needed, nor possible
            with lease_api_on(tmp_path, port, monkeypatch) as api:
                await client.flush()  # the queue drains
                assert queue.read_text() == ""
                reported = exact.quantize(MICRO, ROUND_CEILING)
                assert api.account(agent_id).spent == reported
                await client.close()
                # a restarted runtime finds the old queue again: nothing more is counted
                queue.write_text("".join(line + "\n" for line in queued))
                again = BudgetClient(f"http://127.0.0.1:{port}", token, queue_path=queue)
                await again.start()
                await again.close()
                assert queue.read_text() == ""
                account = api.account(agent_id)
                assert (account.spent, account.leased_out) == (reported, Decimal(0))
                assert account.balance == ALLOCATION - reported
                assert ledger.audit(api.budget().status) == []
        finally:
            await client.close()

    asyncio.run(run())


def test_a_lease_granted_below_the_threshold_is_refreshed_until_denied(tmp_path: Path) -> None:
    with lease_api(tmp_path) as api:
        _, token = create_agent(api.db)

        async def run() -> None:
            async with BudgetClient(
                f"http://127.0.0.1:{api.port}",
                token,
                requested_budget=Decimal("99.97"),
                refresh_threshold=Decimal("0.50"),
            ) as client:
                client.record(Decimal("99.50"), tokens=1, model="gpt-4", provider="openai")
                await client.flush()  # the refresh lends the 0.03 the budget has left
                assert client.remaining == Decimal("0.03")
                await client.flush()  # a second refresh, below the threshold, is denied
                with pytest.raises(BudgetExhausted):
                    client.check(ESTIMATE)  # got: BudgetExceeded, and forever

        asyncio.run(run())
