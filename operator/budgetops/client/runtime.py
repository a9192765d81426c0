"""The runtime SDK: borrow a lease, spend it locally, report what was spent in the background.

An LLM gateway wraps each provider call::

    async with BudgetClient(url, token, queue_path=Path("/var/lib/gw/usage.jsonl")) as client:
        async with client.spend(Decimal("0.05")) as usage:  # BudgetExceeded, BudgetExhausted
            response = await provider(api_key=client.provider_key(), ...)
            usage.record(cost_of(response), tokens=response.tokens, model="gpt-4",
                         provider="openai")

`check` and `record` touch no network: reports are batched and sent by a background task,
retried, queued to a file while the control plane is away, and the lease is refreshed before
it runs out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Unpack

import aiohttp

from budgetops.client.backlog import Backlog, FileBacklog, MemoryBacklog, Refused
from budgetops.client.config import ClientConfig, ClientOptions, Clock
from budgetops.client.errors import (
    BudgetError,
    BudgetExceeded,
    BudgetExhausted,
    CallOverLimit,
    InvalidToken,
    ProtocolError,
)
from budgetops.client.notices import UsageWarning
from budgetops.client.records import Lease, UsageRecord
from budgetops.client.spending import Usage
from budgetops.client.transport import HANDSHAKE, REFRESH, RELEASE, REPORT, Transport
from budgetops.client.wire import JsonObject, budget_id_of, money, text

log = logging.getLogger("budgetops.client")

MAX_BATCH = 1000
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class SealedKey:
    """The provider key as the handshake sealed it; opened only when asked for."""

    text: str
    salt: bytes
    lease_id: str


@dataclass
class _Outcome:
    acked: list[UsageRecord] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    failed: list[UsageRecord] = field(default_factory=list)
    late: list[UsageRecord] = field(default_factory=list)
    """Calls made after their lease closed: charged again to the current lease."""

    def add(self, other: _Outcome) -> None:
        self.acked += other.acked
        self.refused += other.refused
        self.failed += other.failed
        self.late += other.late


class BudgetClient:
    """Spends an agent's budget through leases; one client per runtime and per queue file."""

    def __init__(
        self,
        base_url: str,
        identity_token: str,
        *,
        clock: Clock = time.time,
        session: aiohttp.ClientSession | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.config = ClientConfig(base_url, identity_token, **options)
        self.provider: str | None = None
        self.provider_model: str | None = None
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        path = self.config.queue_path
        self._backlog: Backlog = FileBacklog(path) if path else MemoryBacklog()
        self._failure: BudgetError | None = BudgetError("call `await start()` before spending")
        self._available = Decimal(0)
        self._held = Decimal(0)
        self._lease: Lease | None = None
        self._leases: dict[str, Lease] = {}
        self._retired: list[Lease] = []
        self._pending: list[UsageRecord] = []
        self._sealed: SealedKey | None = None
        self._budget_id = ""
        self._transport: Transport | None = None
        self._wake = asyncio.Event()
        self._sending = asyncio.Lock()
        self._backlogged = True  # until the queue left by a previous run was read
        self._drain_due = True
        self._flush_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self.conflicts = 0
        """Records the control plane refused because one of the same lease and number was
        counted with another cost: a runtime that reuses numbers, never a network failure."""
        self._pump_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._closed = False
        self.max_call_cost: Decimal | None = None
        """What one call may cost under the agent's budget, as the last lease said."""
        self._warn_at: int | None = None
        self._warned: set[str] = set()

    async def __aenter__(self) -> BudgetClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def lease_id(self) -> str | None:
        """The lease spent from now."""
        return None if self._lease is None else self._lease.lease_id

    @property
    def remaining(self) -> Decimal:
        """What `check` lets through: the current lease's rest, less what `spend` holds."""
        return self._available

    async def start(self) -> None:
        """Handshake: take the first lease and the sealed provider key, then send in the
        background whatever a previous run left in the queue file."""
        if self._transport is not None or self._closed:
            raise BudgetError("a client starts once")
        config = self.config
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=config.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        transport = Transport(
            self._session,
            config.base_url,
            config.identity_token,
            retries=config.retries,
            backoff=config.backoff,
        )
        try:
            budget_id = budget_id_of(config.identity_token)
            answer = await transport.post(HANDSHAKE, self._handshake(), authorized=False)
            lease = Lease(text(answer, "lease_id"), money(answer, "budget_granted"))
            salt = base64.b64decode(text(answer, "key_salt"), validate=True)
            self._sealed = SealedKey(text(answer, "ip_token"), salt, lease.lease_id)
        except (BudgetError, binascii.Error) as error:
            await self._close_session()
            if isinstance(error, ProtocolError) and error.code == "BUDGET_EXCEEDED":
                raise BudgetExhausted(f"the handshake was refused: {error.message}") from error
            if isinstance(error, binascii.Error):
                raise ProtocolError("BAD_RESPONSE", "key_salt is not base64") from error
            raise
        self.provider = _optional_text(answer, "provider")
        self.provider_model = _optional_text(answer, "provider_model")
        self._transport = transport
        self._budget_id = budget_id
        self._adopt(lease, answer)
        self._failure = None
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        self._wake.set()
        if self._available < config.refresh_threshold:
            self._refresh_soon()

    def check(self, estimated_cost: Decimal) -> None:
        """Whether a call estimated at `estimated_cost` may go ahead: purely local, a
        comparison. Raises BudgetExceeded, BudgetExhausted once a refresh was denied, or
        InvalidToken once the token was refused."""
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        if self.max_call_cost is not None and estimated_cost > self.max_call_cost:
            raise CallOverLimit(estimated_cost, self.max_call_cost)
        if self._available < estimated_cost:
            raise BudgetExceeded(estimated_cost, self._available)

    def reserve(self, estimated_cost: Decimal) -> None:
        """`check`, then hold the estimate until `unreserve`, so calls in flight together
        cannot pass checks for more than the lease has."""
        self.check(estimated_cost)
        self._held += estimated_cost
        self._available -= estimated_cost

    def unreserve(self, estimated_cost: Decimal) -> None:
        self._held -= estimated_cost
        self._available += estimated_cost

    @asynccontextmanager
    async def spend(self, estimated_cost: Decimal) -> AsyncIterator[Usage]:
        """Reserve the estimate around a provider call; record the actual cost through the
        yielded `Usage` (see the module's docstring)."""
        self.reserve(estimated_cost)
        try:
            yield Usage(self.record)
        finally:
            self.unreserve(estimated_cost)

    def record(
        self,
        cost: Decimal,
        *,
        tokens: int,
        model: str,
        provider: str,
        request_id: str | None = None,
    ) -> None:
        """Charge a call's exact cost to the lease and queue its report; no network, no wait.

        A call already made is always recorded, even once the budget is exhausted; after the
        token was refused the record is kept for a later run and InvalidToken raised.
        """
        lease = self._lease
        if lease is None or self._closed:
            raise BudgetError("the client is not started" if lease is None else "it is closed")
        if not isinstance(cost, Decimal) or not cost.is_finite() or cost < 0:
            raise ValueError(f"cost must be a Decimal of 0 or more, not {cost!r}")
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            raise ValueError("request_id must be 1 to 128 characters of [A-Za-z0-9._:-]")
        seq, due = lease.charge(cost)
        self._pending.append(
            UsageRecord(
                lease_id=lease.lease_id,
                seq=seq,
                request_id=request_id or f"{lease.lease_id}:{seq}",
                tokens=tokens,
                cost_usd=due,
                model=model,
                provider=provider,
                timestamp=int(self._clock()),
            )
        )
        self._available -= due
        self._warn_of(lease)
        if len(self._pending) >= self.config.batch_size:
            self._wake.set()
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.config.flush_interval, self._wake.set)
        if self._available < self.config.refresh_threshold:
            self._refresh_soon()
        if isinstance(self._failure, InvalidToken):
            raise self._failure.with_traceback(None)

    def provider_key(self) -> str:
        """The provider's API key, opened from the handshake's sealed copy at each call so it
        is held in memory only sealed; drop it once the provider call is made."""
        if self._failure is not None and not isinstance(self._failure, BudgetExhausted):
            raise self._failure.with_traceback(None)
        assert self._sealed is not None  # set with the lease by start()
        from budgetops.crypto.sealing import (  # type: ignore[import-not-found, unused-ignore]
            SealError,
            open_sealed,
        )

        sealed = self._sealed
        try:
            key: str = open_sealed(
                sealed.text,
                identity_token=self.config.identity_token,
                lease_id=sealed.lease_id,
                salt=sealed.salt,
            )
        except SealError as error:
            raise ProtocolError(
                "SEALED_KEY_INVALID", "the sealed provider key does not open with this token"
            ) from error
        return key

    async def flush(self) -> None:
        """Send every record now, and what waits in the queue; records the control plane
        cannot take stay queued. Raises InvalidToken once the token was refused."""
        if self._transport is None:
            raise BudgetError("the client is not started")
        if isinstance(self._failure, InvalidToken):
            raise self._failure.with_traceback(None)
        if self._refresh_task is not None:
            await self._refresh_task
        await self._sync(drain=True)

    async def close(self) -> None:
        """Flush, release the leases (what was not spent returns to the budget), stop."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._transport is not None:
                await self._finish()
        finally:
            timers = (self._flush_timer, self._drain_timer, self._refresh_timer, self._expiry_timer)
            for timer in timers:
                if timer is not None:
                    timer.cancel()
            if self._pump_task is not None:
                self._pump_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump_task
            await self._close_session()
            if self._failure is None:
                self._failure = BudgetError("the client is closed")

    async def _finish(self) -> None:
        if self._refresh_task is not None:
            await self._refresh_task
        if not isinstance(self._failure, InvalidToken):
            with contextlib.suppress(InvalidToken):
                await self._sync(drain=True)
                assert self._lease is not None  # taken by start()
                for lease in [*self._retired, self._lease]:
                    await self._release(lease)
        async with self._sending:
            await self._keep(self._take_pending())  # recorded after the token was refused
            waiting = await asyncio.to_thread(self._backlog.load)
        if waiting and isinstance(self._backlog, MemoryBacklog):
            log.warning(
                "%d usage records (%s USD) were never acknowledged and are lost: set "
                "queue_path to keep them for the next run",
                len(waiting),
                sum(record.cost_usd for record in waiting),
            )

    def _handshake(self) -> JsonObject:
        body: JsonObject = {
            "ic_token": self.config.identity_token,
            "requested_budget": self.config.requested_budget,
            "runtime_version": self.config.runtime_version,
        }
        if self.config.runtime_id is not None:
            body["runtime_id"] = self.config.runtime_id
        if self.config.provider is not None:
            body["provider"] = self.config.provider
        return body

    @property
    def _http(self) -> Transport:
        assert self._transport is not None  # background work starts after start()
        return self._transport

    def _adopt(self, lease: Lease, answer: JsonObject) -> None:
        """Spend from `lease` from now; the one before is released once settled. A new lease
        is asked for when four fifths of this one's life have passed: records of calls made
        after it closed would be refused."""
        if self._lease is not None:
            self._retired.append(self._lease)
        self._leases[lease.lease_id] = lease
        self._lease = lease
        self._available = lease.remaining - self._held
        self.max_call_cost = _optional_money(answer, "max_call_cost")
        warn_at = answer.get("warn_at_percent")
        self._warn_at = warn_at if isinstance(warn_at, int) and 0 < warn_at < 100 else None
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        expires = _optional_text(answer, "expires_at")
        try:
            life = datetime.fromisoformat(expires).timestamp() - self._clock() if expires else 0
        except ValueError:
            life = 0
        if life > 0:
            loop = asyncio.get_running_loop()
            self._expiry_timer = loop.call_later(life * 0.8, self._refresh_soon)

    def _refresh_soon(self) -> None:
        if self._refresh_task is None and self._failure is None and not self._closed:
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        lease = self._lease
        assert lease is not None
        body: JsonObject = {
            "lease_id": lease.lease_id,
            "budget_id": self._budget_id,
            "requested_budget": self.config.requested_budget,
            "current_remaining": max(lease.remaining, Decimal(0)),
            "total_spent": lease.reported,
        }
        try:
            answer = await self._http.post(REFRESH, body)
            status = text(answer, "status")
            if status == "denied":
                self._failure = BudgetExhausted(
                    f"budget {self._budget_id} is exhausted: the refresh of {lease.lease_id} "
                    f"was denied ({answer.get('reason')}); {_amount(answer, 'budget_remaining')}"
                    f" USD remain, {_amount(answer, 'total_spent')} of "
                    f"{_amount(answer, 'total_allocated')} USD spent and "
                    f"{_amount(answer, 'leased_out')} USD leased out to open leases"
                )
                log.warning("%s", self._failure)
                return
            if status != "approved":
                raise ProtocolError("BAD_RESPONSE", f"unknown refresh status {status!r}")
            fresh = Lease(text(answer, "lease_id"), money(answer, "budget_granted"))
        except InvalidToken as error:
            self._refuse(error)
            return
        except ProtocolError as error:
            log.warning("refreshing %s failed, tried again later: %s", lease.lease_id, error)
            loop = asyncio.get_running_loop()
            self._refresh_timer = loop.call_later(self.config.drain_interval, self._refresh_soon)
            return
        finally:
            self._refresh_task = None
        self._adopt(fresh, answer)
        self._wake.set()
        if self._available < self.config.refresh_threshold:
            self._refresh_soon()  # granted less than the threshold: ask again, until denied

    def _refuse(self, error: InvalidToken) -> None:
        if not isinstance(self._failure, InvalidToken):
            log.error("the identity token was refused, nothing more is sent: %s", error)
            self._failure = error

    async def _pump(self) -> None:
        """Sends when woken: by a full batch, the flush timer, the drain timer, a new lease."""
        while True:
            await self._wake.wait()
            try:
                await self._sync(drain=self._drain_due)
            except InvalidToken:
                return
            except OSError:
                log.exception("the queue file %s cannot be written", self.config.queue_path)

    async def _sync(self, *, drain: bool) -> None:
        """Send the queue first when asked (order matters: a record far ahead of the
        unacknowledged ones is refused), then the new records; release settled leases."""
        async with self._sending:
            self._wake.clear()  # what woke the pump is handled here
            try:
                if self._backlogged:
                    await self._keep(self._take_pending())
                    if drain:
                        await self._drain()
                if not self._backlogged:
                    await self._send_pending()
                for lease in list(self._retired):
                    if lease.unsettled == 0 and await self._release(lease):
                        self._retired.remove(lease)
            except InvalidToken as error:
                self._refuse(error)
                raise

    def _take_pending(self) -> list[UsageRecord]:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        records, self._pending = self._pending, []
        return records

    async def _send_pending(self) -> None:
        batches = _batches(self._take_pending())
        for index, (lease_id, records) in enumerate(batches):
            try:
                outcome = await self._report(lease_id, records)
            except InvalidToken:
                await self._keep([r for _, later in batches[index:] for r in later])
                raise
            await self._settle(outcome, queued=False)
            if outcome.failed:
                await self._keep(outcome.failed + [r for _, b in batches[index + 1 :] for r in b])
                self._backlogged = True
                self._drain_later()
                return

    async def _drain(self) -> None:
        self._drain_due = False
        for lease_id, records in _batches(await asyncio.to_thread(self._backlog.load)):
            outcome = await self._report(lease_id, records)
            await self._settle(outcome, queued=True)
            if outcome.failed:
                self._drain_later()
                return
        self._backlogged = False

    def _drain_later(self) -> None:
        def due() -> None:
            self._drain_timer = None
            self._drain_due = True
            self._wake.set()

        if self._drain_timer is None:
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(self.config.drain_interval, due)

    async def _keep(self, records: list[UsageRecord]) -> None:
        if records:
            await asyncio.to_thread(self._backlog.append, records)

    async def _settle(self, outcome: _Outcome, *, queued: bool) -> None:
        settled = [*outcome.acked, *(record for record, _ in outcome.refused), *outcome.late]
        if outcome.refused:
            await asyncio.to_thread(self._backlog.reject, outcome.refused)
        if queued and settled:
            await asyncio.to_thread(self._backlog.remove, settled)
        for record in settled:
            lease = self._leases.get(record.lease_id)
            if lease is not None:
                lease.unsettled -= 1
        for record in outcome.late:
            self._recharge(record)

    def _recharge(self, record: UsageRecord) -> None:
        """Charge a call the API refused on its closed lease to the current one: it was
        made after that lease closed, so it is spending of the current lease."""
        lease = self._lease
        assert lease is not None  # and not the record's: see _closed_under
        seq, due = lease.charge(record.cost_usd)
        self._pending.append(replace(record, lease_id=lease.lease_id, seq=seq, cost_usd=due))
        self._available -= due
        log.warning(
            "usage record %s/%d was made after its lease closed; charged to %s as %d",
            *record.key,
            lease.lease_id,
            seq,
        )
        self._wake.set()

    async def _report(self, lease_id: str, records: list[UsageRecord]) -> _Outcome:
        """Report a batch; a refused batch is sent again record by record, so one bad record
        is set aside and the others counted."""
        body: JsonObject = {
            "lease_id": lease_id,
            "reports": [record.to_report() for record in records],
        }
        try:
            answer = await self._http.post(REPORT, body)
        except ProtocolError as error:
            if error.retryable:
                log.warning("reporting %d records failed, queued: %s", len(records), error)
                return _Outcome(failed=records)
            if len(records) == 1:
                if error.code == "LEASE_CLOSED":
                    return self._closed_under(records[0])
                if error.code == "REPORT_CONFLICT":
                    self.conflicts += 1
                return _Outcome(refused=[(records[0], str(error))])
            outcome = _Outcome()
            for record in records:
                outcome.add(await self._report(lease_id, [record]))
            return outcome
        self._heard(lease_id, answer)
        return _Outcome(acked=records)

    def _warn_of(self, lease: Lease) -> None:
        """Warn once per lease when what it reported reaches the warning share: known here
        at once, before the control plane counts it."""
        share = self._warn_at
        if share is None or lease.granted <= 0 or lease.reported * 100 < share * lease.granted:
            return
        used = (lease.reported * 100 / lease.granted).quantize(Decimal("0.1"))
        self._warn(
            UsageWarning(
                "lease",
                used,
                f"{lease.lease_id} has spent {lease.reported:.2f} of the {lease.granted:.2f} "
                f"USD it was granted ({used}%; the budget warns at {share}%)",
            ),
            once=f"lease:{lease.lease_id}",
        )

    def _heard(self, lease_id: str, answer: JsonObject) -> None:
        """The warnings a report's answer carries (the account's reach the runtime only so)."""
        found = answer.get("warnings")
        for item in found if isinstance(found, list) else ():
            if not isinstance(item, dict) or item.get("scope") not in ("lease", "account"):
                continue
            try:
                used = Decimal(str(item.get("percent_used")))
            except ArithmeticError:
                continue
            scope = str(item["scope"])
            once = f"lease:{lease_id}" if scope == "lease" else "account"
            self._warn(UsageWarning(scope, used, str(item.get("message", ""))), once=once)

    def _warn(self, warning: UsageWarning, *, once: str) -> None:
        if once in self._warned:
            return
        self._warned.add(once)
        log.warning("%s", warning.message)
        if self.config.on_warning is not None:
            self.config.on_warning(warning)

    def _closed_under(self, record: UsageRecord) -> _Outcome:
        """A record refused because its call was made after its lease closed: charged to the
        current lease, or kept until a refresh brings one when its lease was the current."""
        if self._lease is not None and self._lease.lease_id != record.lease_id:
            return _Outcome(late=[record])
        log.warning("lease %s was closed by the control plane; refreshing", record.lease_id)
        self._refresh_soon()
        return _Outcome(failed=[record])

    async def _release(self, lease: Lease) -> bool:
        """Whether the lease is closed (or gone) on the control plane."""
        try:
            await self._http.post(RELEASE, {"lease_id": lease.lease_id})
        except ProtocolError as error:
            log.warning("releasing %s failed: %s", lease.lease_id, error)
            return not error.retryable
        return True

    async def _close_session(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _batches(records: Sequence[UsageRecord]) -> list[tuple[str, list[UsageRecord]]]:
    """Records by lease, in seq order, at most MAX_BATCH to a report."""
    by_lease: dict[str, list[UsageRecord]] = {}
    for record in records:
        by_lease.setdefault(record.lease_id, []).append(record)
    batches = []
    for lease_id, ordered in by_lease.items():
        ordered.sort(key=lambda record: record.seq)
        batches += [
            (lease_id, ordered[start : start + MAX_BATCH])
            for start in range(0, len(ordered), MAX_BATCH)
        ]
    return batches


def _optional_money(answer: JsonObject, key: str) -> Decimal | None:
    return None if answer.get(key) is None else money(answer, key)


def _optional_text(answer: JsonObject, key: str) -> str | None:
    value = answer.get(key)
    return value if isinstance(value, str) else None


def _amount(answer: JsonObject, key: str) -> str:
    """An amount for a message: what the server said, or "?" when it said nothing usable."""
    try:
        return f"{money(answer, key):.2f}"
    except ProtocolError:
        return "?"
