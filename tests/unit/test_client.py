"""The runtime SDK against a small fake of the lease API served on loopback."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from budgetops.client import (
    BudgetClient,
    BudgetExceeded,
    BudgetExhausted,
    ClientOptions,
    InvalidToken,
    SyncBudgetClient,
)

NOW = 1_764_757_845.0
PROVIDER_KEY = "sk-test-provider-key"


def _part(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


TOKEN = ".".join(
    [
        _part({"alg": "HS256", "typ": "JWT"}),
        _part({"agent_id": "agent_abc123", "budget_id": "budget-abc123"}),
        "signature",
    ]
)


class Plane:
    """Just enough of the control plane: leases, counted records, and failures on demand."""

    def __init__(self, grant: Decimal = Decimal("10.00")) -> None:
        self.grant = grant
        self.counted: dict[str, dict[int, Decimal]] = {}
        self.batches: list[tuple[str, list[int]]] = []
        self.log: list[str] = []
        self.bodies: list[str] = []
        self.failing_reports = 0
        self.report_attempts = 0
        self.bad_seqs: set[int] = set()
        self.conflicting_seqs: set[int] = set()
        self.closed: set[str] = set()
        """Leases closed on the control plane: every record reported on them is refused."""
        self.life: float | None = None
        """Seconds from the client's NOW to a handshake lease's expiry (None: a year)."""
        self.deny_refresh = False
        self.revoked = False
        self.empty = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/auth/handshake", self.handshake)
        app.router.add_post("/api/v1/budget/report", self.report)
        app.router.add_post("/api/v1/budget/refresh", self.refresh)
        app.router.add_post("/api/v1/budget/release", self.release)
        return app

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        self.bodies.append(raw)
        body: dict[str, Any] = json.loads(raw, parse_float=Decimal)
        return body

    def _lease(self) -> str:
        lease_id = f"lease_{uuid.uuid4()}"
        self.counted[lease_id] = {}
        return lease_id

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.revoked or request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "INVALID_TOKEN", "the token was revoked")
        return None

    async def handshake(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body["ic_token"] != TOKEN:
            return _error(401, "INVALID_TOKEN", "bad signature")
        if self.empty:
            return _error(403, "BUDGET_EXCEEDED", "budget-abc123 has nothing left")
        lease_id = self._lease()
        self.log.append(f"handshake {lease_id}")
        salt = b"s" * 16
        return _json(
            {
                "ip_token": _seal(PROVIDER_KEY, salt, lease_id),
                "key_salt": base64.b64encode(salt).decode(),
                "budget_granted": self.grant,
                "budget_remaining": Decimal("90.00"),
                "lease_id": lease_id,
                "provider": "openai",
                "provider_model": "gpt-4",
                "expires_at": (
                    "2026-12-03T10:30:45.123Z"
                    if self.life is None
                    else datetime.fromtimestamp(NOW + self.life, UTC).isoformat()
                ),
            }
        )

    async def report(self, request: web.Request) -> web.Response:
        self.report_attempts += 1
        if refused := self._refused(request):
            return refused
        if self.failing_reports:
            self.failing_reports -= 1
            return _error(503, "UNAVAILABLE", "retry")
        body = await self._body(request)
        seqs = [entry["seq"] for entry in body["reports"]]
        if self.bad_seqs & set(seqs):
            return _error(400, "INVALID_REQUEST", "reports[0].model: bad")
        if body["lease_id"] in self.closed:
            return _error(409, "LEASE_CLOSED", "the lease was revoked before these calls")
        if self.conflicting_seqs & set(seqs):
            return _error(409, "REPORT_CONFLICT", "report 2 was counted with another cost")
        counted = self.counted[body["lease_id"]]
        fresh = [entry for entry in body["reports"] if entry["seq"] not in counted]
        counted.update((entry["seq"], entry["cost_usd"]) for entry in fresh)
        self.batches.append((body["lease_id"], seqs))
        self.log.append(f"report {body['lease_id']} {seqs}")
        return _json({"lease_id": body["lease_id"], "accepted": len(fresh)})

    async def refresh(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        body = await self._body(request)
        assert body["budget_id"] == "budget-abc123"
        if self.deny_refresh:
            return _json(
                {
                    "status": "denied",
                    "reason": "total_budget_exhausted",
                    "budget_remaining": Decimal("0.00"),
                    "total_allocated": Decimal("100.00"),
                    "total_spent": Decimal("100.00"),
                }
            )
        lease_id = self._lease()
        self.log.append(f"refresh {body['lease_id']} -> {lease_id}")
        return _json({"status": "approved", "budget_granted": self.grant, "lease_id": lease_id})

    async def release(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        body = await self._body(request)
        self.log.append(f"release {body['lease_id']}")
        return _json({"lease_id": body["lease_id"], "status": "released"})

    def costs(self, lease_id: str) -> list[Decimal]:
        return [cost for _, cost in sorted(self.counted[lease_id].items())]


def _seal(plain: str, salt: bytes, lease_id: str) -> str:
    """The provider key sealed as docs/lease-api.md says."""
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=salt, info=b"budgetops.dev/provider-key/v1")
    iv = b"i" * 12
    sealed = AESGCM(hkdf.derive(TOKEN.encode())).encrypt(iv, plain.encode(), lease_id.encode())
    parts = (iv, sealed[:-16], sealed[-16:])
    return "AES256:" + ":".join(base64.b64encode(part).decode() for part in parts)


def _json(body: dict[str, object]) -> web.Response:
    text = json.dumps(body, default=float)
    return web.Response(text=text, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@asynccontextmanager
async def serving(plane: Plane, port: int = 0) -> AsyncIterator[str]:
    runner = web.AppRunner(plane.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def client(url: str, **options: Any) -> BudgetClient:
    settings: ClientOptions = {"backoff": 0.001, "flush_interval": 10.0, **options}
    return BudgetClient(url, TOKEN, clock=lambda: NOW, **settings)


async def until(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def scenario(test: Callable[[Plane, str], Awaitable[None]], plane: Plane | None = None) -> None:
    async def run() -> None:
        fake = plane or Plane()
        async with serving(fake) as url:
            await test(fake, url)

    asyncio.run(run())


def record(budget: BudgetClient | SyncBudgetClient, cost: str) -> None:
    budget.record(Decimal(cost), tokens=100, model="gpt-4", provider="openai")


def test_the_handshake_grants_a_lease_and_check_is_local() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url, runtime_id="gateway-7f9c") as budget:
            assert '"requested_budget":10.00' in plane.bodies[0]
            assert '"runtime_id":"gateway-7f9c"' in plane.bodies[0]
            assert budget.provider == "openai"
            assert budget.remaining == Decimal("10.00")
            budget.check(Decimal("10.00"))
            with pytest.raises(BudgetExceeded, match=r"10\.01 USD is more than the 10\.00 USD"):
                budget.check(Decimal("10.01"))
            seconds = timeit.timeit(lambda: budget.check(Decimal("0.05")), number=20_000)
            assert seconds / 20_000 < 5e-6

    scenario(test)


def test_a_client_not_started_refuses_to_spend() -> None:
    budget = BudgetClient("http://127.0.0.1:9", TOKEN)
    with pytest.raises(Exception, match="start"):
        budget.check(Decimal("0.01"))


def test_records_are_numbered_and_report_their_exact_costs() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url) as budget:
            for _ in range(3):
                record(budget, "0.0457")
            await budget.flush()
            lease_id = budget.lease_id
            assert lease_id is not None
            assert plane.batches == [(lease_id, [1, 2, 3])]
            assert plane.costs(lease_id) == [Decimal("0.0457")] * 3
            assert '"cost_usd":0.0457' in plane.bodies[-1]
            assert f'"timestamp":{int(NOW)}' in plane.bodies[-1]
            assert budget.remaining == Decimal("9.8629")

    scenario(test)


def test_a_full_batch_is_sent_without_waiting_for_the_interval() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url, batch_size=3) as budget:
            await budget.flush()  # the drain at start is done
            record(budget, "0.01")
            record(budget, "0.01")
            await asyncio.sleep(0.02)
            assert plane.batches == []
            record(budget, "0.01")
            await until(lambda: len(plane.batches) == 1)
            assert plane.batches[0][1] == [1, 2, 3]

    scenario(test)


def test_a_partial_batch_is_sent_after_the_flush_interval() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url, batch_size=100, flush_interval=0.01) as budget:
            record(budget, "0.01")
            await until(lambda: len(plane.batches) == 1)

    scenario(test)


def test_a_spend_holds_its_estimate_until_the_call_is_recorded() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url) as budget:
            async with budget.spend(Decimal("9.00")) as usage:
                with pytest.raises(BudgetExceeded):
                    budget.check(Decimal("2.00"))
                usage.record(Decimal("0.50"), tokens=10, model="gpt-4", provider="openai")
            assert budget.remaining == Decimal("9.50")
            budget.check(Decimal("2.00"))

    scenario(test)


def test_an_approved_refresh_moves_to_the_new_lease_and_releases_the_old_once_acked() -> None:
    async def test(plane: Plane, url: str) -> None:
        options = {"refresh_threshold": Decimal("0.50"), "retries": 0}
        async with client(url, **options) as budget:
            first = budget.lease_id
            plane.failing_reports = 10**6
            record(budget, "9.60")
            await until(lambda: budget.lease_id != first)
            second = budget.lease_id
            assert budget.remaining == Decimal("10.00")
            record(budget, "0.10")
            await budget.flush()
            assert plane.log[1:] == [f"refresh {first} -> {second}"]  # not released: not acked
            plane.failing_reports = 0
            await budget.flush()
            assert plane.log[2:] == [
                f"report {first} [1]",
                f"report {second} [1]",
                f"release {first}",
            ]
        assert plane.log[-1] == f"release {second}"
        assert '"current_remaining":0.40,"total_spent":9.60' in plane.bodies[1]

    scenario(test)


def test_a_denied_refresh_exhausts_the_budget() -> None:
    async def test(plane: Plane, url: str) -> None:
        plane.deny_refresh = True
        async with client(url) as budget:
            record(budget, "9.50")
            await budget.flush()
            with pytest.raises(BudgetExhausted, match=r"denied \(total_budget_exhausted\); 0\.00"):
                budget.check(Decimal("0.01"))
            record(budget, "0.10")  # a call already made is still counted
            await budget.flush()
            assert plane.costs(budget.lease_id or "") == [Decimal("9.50"), Decimal("0.10")]

    scenario(test)


def test_reports_are_retried_then_queued_to_the_file_then_drained(tmp_path: Path) -> None:
    queue = tmp_path / "usage.jsonl"

    async def test(plane: Plane, url: str) -> None:
        plane.failing_reports = 3
        async with client(url, retries=2, queue_path=queue, drain_interval=0.01) as budget:
            record(budget, "0.25")
            await budget.flush()
            assert plane.report_attempts == 3
            assert [json.loads(line)["seq"] for line in queue.read_text().splitlines()] == [1]
            await until(lambda: plane.batches != [])
            await until(lambda: queue.read_text() == "")
            assert plane.costs(budget.lease_id or "") == [Decimal("0.25")]

    scenario(test)


def test_a_new_client_sends_exactly_once_what_the_previous_run_queued(tmp_path: Path) -> None:
    queue = tmp_path / "usage.jsonl"

    async def test() -> None:
        plane = Plane()
        async with serving(plane) as url:
            first = client(url, queue_path=queue)
            await first.start()
        # the control plane is gone: connections are refused
        for cost in ("0.01", "0.02"):
            record(first, cost)
        await first.close()
        assert len(queue.read_text().splitlines()) == 2
        old = first.lease_id or ""
        async with serving(plane) as url, client(url, queue_path=queue) as second:
            await second.flush()
            assert queue.read_text() == ""
        assert [batch for batch in plane.batches if batch[0] == old] == [(old, [1, 2])]
        assert plane.costs(old) == [Decimal("0.01"), Decimal("0.02")]

    asyncio.run(test())


def test_a_refused_record_is_set_aside_and_the_others_counted(tmp_path: Path) -> None:
    queue = tmp_path / "usage.jsonl"

    async def test(plane: Plane, url: str) -> None:
        plane.bad_seqs = {2}
        async with client(url, queue_path=queue) as budget:
            for _ in range(3):
                record(budget, "0.01")
            await budget.flush()
            assert sorted(plane.counted[budget.lease_id or ""]) == [1, 3]
            (rejected,) = (tmp_path / "usage.jsonl.rejected").read_text().splitlines()
            assert json.loads(rejected)["seq"] == 2
            assert "INVALID_REQUEST" in json.loads(rejected)["reason"]
            assert not queue.exists() or queue.read_text() == ""

    scenario(test)


def test_a_refused_token_makes_every_later_call_fail(tmp_path: Path) -> None:
    queue = tmp_path / "usage.jsonl"

    async def test(plane: Plane, url: str) -> None:
        async with client(url, queue_path=queue) as budget:
            plane.revoked = True
            record(budget, "0.01")
            with pytest.raises(InvalidToken, match="revoked"):
                await budget.flush()
            with pytest.raises(InvalidToken):
                budget.check(Decimal("0.01"))
            with pytest.raises(InvalidToken):
                record(budget, "0.02")
            with pytest.raises(InvalidToken):
                await budget.flush()
        assert [json.loads(line)["seq"] for line in queue.read_text().splitlines()] == [1, 2]

    scenario(test)


def test_the_provider_key_is_opened_only_when_asked_for() -> None:
    async def test(plane: Plane, url: str) -> None:
        async with client(url) as budget:
            assert PROVIDER_KEY not in repr(vars(budget))
            assert budget.provider_key() == PROVIDER_KEY

    scenario(test)


def test_a_handshake_finding_nothing_left_is_budget_exhausted() -> None:
    async def test(plane: Plane, url: str) -> None:
        plane.empty = True
        budget = client(url)
        with pytest.raises(BudgetExhausted, match="nothing left"):
            await budget.start()
        await budget.close()

    scenario(test)


def test_a_refused_handshake_is_invalid_token() -> None:
    async def test(plane: Plane, url: str) -> None:
        budget = BudgetClient(url, "not-the-token")
        with pytest.raises(InvalidToken):
            await budget.start()
        await budget.close()

    scenario(test)


def test_the_sync_client_blocks_on_a_private_loop() -> None:
    def use(url: str) -> str:
        with SyncBudgetClient(url, TOKEN, clock=lambda: NOW) as budget:
            budget.check(Decimal("1.00"))
            with budget.spend(Decimal("1.00")) as usage:
                usage.record(Decimal("0.333"), tokens=7, model="gpt-4", provider="openai")
            record(budget, "0.01")
            budget.flush()
            assert budget.remaining == Decimal("9.657")
            return budget.lease_id or ""

    async def test(plane: Plane, url: str) -> None:
        lease_id = await asyncio.to_thread(use, url)
        assert plane.costs(lease_id) == [Decimal("0.333"), Decimal("0.01")]
        assert plane.log[-1] == f"release {lease_id}"

    scenario(test)


def test_the_two_clients_have_the_same_public_surface() -> None:
    """Once SyncBudgetClient had no `lease_id` or `remaining`, though the docs say both
    clients have the same methods."""

    def public(obj: object) -> dict[str, list[str]]:
        names = {name for name in dir(obj) if not name.startswith("_")}
        return {
            name: list(inspect.signature(attr).parameters) if callable(attr) else []
            for name in names
            if not isinstance(attr := getattr(obj, name), SyncBudgetClient | BudgetClient)
        }

    sync = SyncBudgetClient("http://127.0.0.1:9", TOKEN)
    try:
        assert public(sync) == public(sync.client)
        assert {"lease_id", "remaining", "reserve", "conflicts"} <= set(public(sync))
        assert (sync.lease_id, sync.remaining) == (None, 0)
    finally:
        sync.close()


def test_a_record_sent_again_with_another_cost_is_counted_as_a_conflict() -> None:
    async def test(plane: Plane, url: str) -> None:
        plane.conflicting_seqs.add(2)
        budget = client(url)
        await budget.start()
        record(budget, "0.01")
        record(budget, "0.02")
        await budget.flush()
        assert budget.conflicts == 1
        assert plane.costs(budget.lease_id or "") == [Decimal("0.01")]
        await budget.close()

    scenario(test)


def test_sub_cent_costs_are_reported_exactly() -> None:
    """Once every record was rounded up to the cent: 0.0457 was reported as 0.05."""

    async def test(plane: Plane, url: str) -> None:
        budget = client(url)
        await budget.start()
        record(budget, "0.0457")
        record(budget, "0.0000004")
        record(budget, "0.0000004")
        await budget.flush()
        lease_id = budget.lease_id or ""
        assert plane.costs(lease_id) == [Decimal("0.0457"), Decimal("0.000001"), Decimal(0)]
        assert '"cost_usd":0.0457' in "".join(plane.bodies)
        assert budget.remaining == Decimal("9.954299")
        await budget.close()

    scenario(test)


def test_a_lease_is_refreshed_before_it_expires() -> None:
    """Records of calls made after a lease closed are refused: the client moves on first."""

    async def test(plane: Plane, url: str) -> None:
        plane.life = 0.2
        async with client(url) as budget:
            first = budget.lease_id
            await until(lambda: budget.lease_id != first)
            assert plane.log[1] == f"refresh {first} -> {budget.lease_id}"

    scenario(test)


def test_a_call_made_after_its_lease_closed_is_charged_to_the_next_lease() -> None:
    """The API refuses records of calls made after their lease closed: the money was still
    spent, so the client charges it to the lease it moves to, once."""

    async def test(plane: Plane, url: str) -> None:
        async with client(url, drain_interval=0.01) as budget:
            first = budget.lease_id or ""
            plane.closed.add(first)
            record(budget, "0.50")
            await budget.flush()  # refused on the closed lease: kept, and a refresh asked for
            await budget.flush()  # on the new lease
            second = budget.lease_id or ""
            assert second != first
            assert plane.costs(first) == []
            assert plane.costs(second) == [Decimal("0.50")]
            assert budget.remaining == Decimal("9.50")

    scenario(test)
