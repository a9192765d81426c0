"""Group commit: many concurrent charges to one budget, one read and one write per batch.

A budget with waiting changes is handed to a small, shared set of writer threads (started on
demand, gone when idle); one writer at a time drains a budget's waiting changes, applies them
in order to one snapshot, persists once and answers every waiter. A thread per budget would
cost a stack and a malloc arena each when a thousand budgets roll over at the same instant.

No waiter is answered before its attempt is over: the write succeeded, or no waiter of that
attempt needed one. That holds for a waiter whose answer needs no write (a denial, a replay, a
dry run) too, because it stands on the changes before it in the batch: a replay of a key that
an earlier waiter reserves in the same snapshot is "already charged" only if that snapshot is
stored. On a write conflict every waiter still waiting is decided again, in order, on a fresh
read; if the attempt raises, every one of them gets the error. So each answer is its waiter's
own decision on a state that was stored together with every other answer of its attempt.
Deciding a denial again cannot admit it as a side effect of another waiter's retry (the
ResourceQuota bug the design notes cite, kubernetes#141904, where a retry overwrote a denial
it never re-evaluated with a default "allowed"): a re-decided denial is admitted only if its
own change admits it on the fresh state, and then its charge is in what is written.

No status is written that does not read back (`check_readback`): a batch is checked once,
after its changes ran, with the model that reads it (what its snapshot held, which read back
already, is left out: `Held`). If it fails, the batch is run again
checking after each change; the first change after which the status no longer reads back is
answered InvalidCharge, and the others are decided again without it. One request that
would make a budget unreadable (a bug, or an input the engine let through) fails alone.
A store that can hold only so much in one budget (`limit`: the API server's object) has
the size checked the same way (`check_size`): the change that would not fit fails alone.

Every wait is bounded by its caller's deadline, and no write that includes a waiter starts
after its cutoff, shortly before that deadline: a write that finished after its caller had
given up would charge a request that was refused.

Callers wait on a thread (`submit`) or on an event loop (`submit_async`): a loop is woken once
per answer and never blocks, so one loop thread can keep a whole batch waiting.

How a batch is read and persisted is the store's business: it hands in an `attempt`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from budgetops.apis.ledger import KEY_KEPT, Ledger
from budgetops.apis.resources import Budget, BudgetKey, field_errors
from budgetops.engine.ledger import InvalidCharge
from budgetops.store.audit import queued
from budgetops.store.base import ChargeTimeout

if TYPE_CHECKING:  # a command line that only reads never loads asyncio (docs/performance.md)
    import asyncio

T = TypeVar("T")

IDLE_WRITER_SECONDS = 2.0
WRITERS = 16
"""Budgets written at the same time, at most; more wait their turn (within their deadlines)."""
WRITE_ALLOWANCE = 1.0
"""Seconds kept, at most, between a waiter's cutoff and its deadline for a write to finish
in (a quarter of its timeout when that is shorter)."""
BACKOFF_SECONDS = 0.002
"""Base of the jittered pause after a conflict; it grows with each conflict up to 50 ms.

Without it the replica that just won keeps winning: its next batch starts from its own cache
at once, while the loser is still reading the budget back from the API server."""


@dataclass
class Waiter:
    """One caller's change, its deadline, and where its answer goes."""

    change: Callable[[Budget], Any]
    needs_write: Callable[[Any], bool]
    deadline: float
    """When the caller stops waiting for its answer."""
    cutoff: float
    """The last moment a write including this change may start."""
    wake: Callable[[], None] = lambda: None
    """Called once answered, from the writer's thread: it sets the Event a thread waits on,
    or resolves the future of a coroutine."""
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def answer(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self.wake()

    def outcome(self, key: BudgetKey, timeout: float) -> Any:
        """The answer, once `done`: the result, or the error raised."""
        if not self.done:
            raise ChargeTimeout(f"{key} could not be charged within {timeout:.1f}s")
        if self.error is not None:
            raise self.error
        return self.result


Writers = list[tuple[Waiter, Any]]
Apply = Callable[[Budget], Writers]
Attempt = Callable[[BudgetKey, bool, Apply], bool]
"""attempt(key, fresh, apply): read the budget (afresh if `fresh`), run `apply` on it, and
persist it if `apply` returned any writers. True when done, False on a write conflict."""


@dataclass(frozen=True)
class _Decided:
    """What one waiter's change gave in an attempt; its answer once that attempt is over."""

    waiter: Waiter
    result: Any = None
    error: Exception | None = None
    writes: bool = False


@dataclass(frozen=True)
class Held:
    """What a snapshot held before its changes ran, left out of `check_readback`: it read
    back when the status was read, or was checked when it was written. On a busy budget it
    is most of the status (settled keys, open reservations, recent entries) and most of
    the time a check takes (docs/performance.md)."""

    last_settled: str | None
    """The newest settled key. Keys are kept in the order they settled (`Ledger.settled`),
    so those a change added are the ones after it; a key it only re-dated holds a timestamp
    of the engine's clock, aware by construction."""
    records: dict[int, object]
    """The reservations and entries, by identity: the engine never changes one in place,
    it adds or removes it. (Kept, not only their ids: an id is unique only while its
    object lives.) Lease holds are changed in place, and accounts: both are checked."""

    @classmethod
    def of(cls, budget: Budget) -> Held | None:
        status = getattr(budget, "status", None)
        if not isinstance(status, Ledger):
            return None
        records: dict[int, object] = {id(entry): entry for entry in status.entries}
        for account in status.accounts.values():
            records.update((id(held), held) for held in account.reservations.values())
        return cls(next(reversed(status.settled), None), records)


def _unheld(status: Ledger, held: Held) -> Ledger:
    """A shallow copy of `status` without what `held` holds."""
    accounts = dict(status.accounts)
    for name, account in status.accounts.items():
        if any(id(r) in held.records for r in account.reservations.values()):
            fresh = {k: r for k, r in account.reservations.items() if id(r) not in held.records}
            accounts[name] = dataclasses.replace(account, reservations=fresh)
    settled = {}
    for key in reversed(status.settled):
        if key == held.last_settled:
            break
        settled[key] = status.settled[key]
    update = {
        "accounts": accounts,
        "settled": settled,
        "entries": [entry for entry in status.entries if id(entry) not in held.records],
    }
    return status.model_copy(update=update)


def check_readback(key: BudgetKey, budget: Budget, *, held: Held | None = None) -> None:
    """Raise InvalidCharge unless `budget.status`, serialized as the stores write it, reads
    back with its own model; what `held` holds is left out."""
    status = getattr(budget, "status", None)
    if not isinstance(status, BaseModel):  # group commit serves other objects in tests
        return
    if held is not None and isinstance(status, Ledger):
        status = _unheld(status, held)
    try:
        type(status).model_validate_json(status.model_dump_json(by_alias=True, exclude_none=True))
    except ValidationError as error:
        raise InvalidCharge(
            f"{key}: this change would leave a status that does not read back "
            f"({field_errors(error)[0]}); nothing was written"
        ) from error


def stored_size(budget: Budget) -> int:
    """Bytes of `budget` as compact JSON: about what the API server stores for it."""
    return len(budget.model_dump_json(by_alias=True, exclude_none=True))


def check_size(key: BudgetKey, budget: Budget, *, limit: int, before: int) -> int:
    """The size of `budget` (`stored_size`); raise InvalidCharge if it is over `limit` and
    larger than `before`, its size before the change. Such a write would be refused for
    the whole batch, again and again, while the one change that made it too big is what
    should fail; a change that makes a budget already over the limit smaller still passes."""
    size = stored_size(budget)
    if size <= limit or size <= before:
        return size
    status = getattr(budget, "status", None)
    held = ""
    if isinstance(status, Ledger):
        kept = int(KEY_KEPT.total_seconds() // 60)
        held = (
            f" ({len(status.accounts):,} accounts and the keys of {len(status.settled):,} "
            f"requests settled in the last {kept} minutes)"
        )
    raise InvalidCharge(
        f"{key} is full: this change would make it {size:,} bytes{held}, and one object "
        f"holds {limit:,}; nothing was charged. Accounts it holds are charged as before, and "
        "the keys of settled requests make room as they age out; to hold more accounts, "
        "split the budget (one per team or namespace)"
    )


class _Spoiled(Exception):
    """An attempt whose status would not read back: `waiter`'s change spoiled it, or (None)
    some change of the batch did. The attempt raises it so that nothing is written."""

    def __init__(self, waiter: Waiter | None, error: InvalidCharge) -> None:
        super().__init__(str(error))
        self.waiter, self.error = waiter, error


def _limits(now: float, timeout: float) -> tuple[float, float]:
    """(deadline, cutoff) for a waiter that may wait `timeout` seconds from `now`."""
    deadline = now + timeout
    return deadline, deadline - min(WRITE_ALLOWANCE, timeout / 4)


def _past_cutoff(key: BudgetKey, waiter: Waiter, now: float) -> bool:
    """Whether no write may include `waiter` any more; if so it is answered ChargeTimeout."""
    if waiter.cutoff > now:
        return False
    waiter.answer(error=ChargeTimeout(f"{key} could not be charged in time"))
    return True


def _wake(loop: asyncio.AbstractEventLoop, answered: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: its caller went away
        loop.call_soon_threadsafe(_resolve, answered)


def _resolve(answered: asyncio.Future[None]) -> None:
    if not answered.done():  # not cancelled by its caller's timeout meanwhile
        answered.set_result(None)


@dataclass
class _Lane:
    """The queue of one budget and whether a writer has it (running or waiting for one)."""

    queue: list[Waiter] = field(default_factory=list)
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    crowded: bool = False
    """Its last batch had more than one waiter: see `_drain`."""


@dataclass
class Stats:
    """Counters the metrics layer exports: batches, their sizes, conflicts.

    Writer threads of different budgets update them, so updates go through `count`.
    """

    batches: int = 0
    charges: int = 0
    conflicts: int = 0
    largest_batch: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, written: int = 0, conflicts: int = 0) -> None:
        with self._lock:
            if written:
                self.batches += 1
                self.charges += written
                self.largest_batch = max(self.largest_batch, written)
            self.conflicts += conflicts


class GroupCommit:
    """Batches status changes per budget and persists each batch with one `attempt`.

    `whole`: check that the whole status reads back before each write, what the snapshot
    held included (see `Held`): a command line can afford it, and it also refuses to
    write over a status that was broken before. `readback`: how a store that writes only
    what a batch changed checks it (store.rows); by default the status less what its
    snapshot held (`Held`). `limit`: the most bytes one budget may take (`check_size`),
    None where a store has no such bound. `clock` and `sleep` (the pause after a conflict)
    are the monotonic clock's by default; tests hand in their own to script deadlines.
    """

    def __init__(
        self,
        attempt: Attempt,
        *,
        enabled: bool = True,
        whole: bool = False,
        readback: Callable[[BudgetKey, Budget], object] | None = None,
        limit: int | None = None,
        writers: int = WRITERS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.attempt = attempt
        self.enabled = enabled
        self.whole = whole
        self.readback = readback
        self.limit = limit
        self.writers = writers
        self.clock = clock
        self.sleep = sleep
        self.stats = Stats()
        self._lanes: dict[BudgetKey, _Lane] = {}
        self._lanes_lock = threading.Lock()
        self._ready: deque[tuple[BudgetKey, _Lane]] = deque()
        self._pool = threading.Condition()
        self._threads = 0
        self._idle = 0

    def submit(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float,
        needs_write: Callable[[T], bool],
    ) -> T:
        """Queue `change` for `key` and wait for its answer; ChargeTimeout past `timeout`."""
        answered = threading.Event()
        waiter = Waiter(change, needs_write, *_limits(self.clock(), timeout), answered.set)
        if not self.enabled:
            self.commit(key, [waiter])
        else:
            self._enqueue(key, waiter)
        answered.wait(max(0.0, waiter.deadline - self.clock()))
        result: T = waiter.outcome(key, timeout)
        return result

    async def submit_async(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float,
        needs_write: Callable[[T], bool],
    ) -> T:
        """`submit` for a coroutine: the event loop goes on while the batch is written."""
        import asyncio  # here, not at the top: see TYPE_CHECKING above

        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        waiter = Waiter(
            change,
            needs_write,
            *_limits(self.clock(), timeout),
            functools.partial(_wake, loop, answered),
        )
        if not self.enabled:
            await loop.run_in_executor(None, self.commit, key, [waiter])
        else:
            self._enqueue(key, waiter)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, waiter.deadline - self.clock())):
                await answered
        result: T = waiter.outcome(key, timeout)
        return result

    def _enqueue(self, key: BudgetKey, waiter: Waiter) -> None:
        with self._lanes_lock:
            lane = self._lanes.setdefault(key, _Lane())
        with lane.lock:
            lane.queue.append(waiter)
            schedule = not lane.running
            lane.running = True
        if schedule:
            self._schedule(key, lane)

    def busy(self) -> bool:
        """Whether a budget is being written or waits for a writer."""
        with self._pool:
            return bool(self._ready) or self._threads > self._idle

    def _schedule(self, key: BudgetKey, lane: _Lane) -> None:
        """Hand `lane` to an idle writer, or start one if all are busy and there is room."""
        with self._pool:
            self._ready.append((key, lane))
            start = self._idle == 0 and self._threads < self.writers
            if start:
                self._threads += 1
            else:
                self._pool.notify()
        if start:  # not under the lock: starting a thread waits for it to run
            threading.Thread(target=self._write, daemon=True, name="commit").start()

    def _write(self) -> None:
        """One writer: drain ready budgets one batch at a time; exit after idling a while."""
        while True:
            with self._pool:
                while not self._ready:
                    self._idle += 1
                    woken = self._pool.wait(IDLE_WRITER_SECONDS)
                    self._idle -= 1
                    # Woken for a budget another writer took first, it waits again: a
                    # thread ended each time was a new thread and a new connection later.
                    if not woken and not self._ready:
                        self._threads -= 1
                        return
                key, lane = self._ready.popleft()
            self._drain(key, lane)

    def _drain(self, key: BudgetKey, lane: _Lane) -> None:
        """Commit everything queued for one budget as one batch; requeue the budget behind
        the others if more arrived meanwhile, so that one busy budget cannot hold a writer.

        After a batch of many, the writer first lets other threads run (the callers it
        just answered queue their next changes), so the next batch takes them all: taken
        at once, batches of a hot budget at 8 clients held 4 changes, not 7, and each
        batch costs a transaction. A lone caller never waits for this."""
        if lane.crowded:
            time.sleep(0)
        with lane.lock:
            batch, lane.queue = lane.queue, []
        lane.crowded = len(batch) > 1
        try:
            self.commit(key, batch)
        except BaseException as error:  # never leave a waiter hanging
            for waiter in batch:
                if not waiter.done:
                    waiter.answer(error=error)
        with lane.lock:
            more = bool(lane.queue)
            lane.running = more
        if more:
            self._schedule(key, lane)

    def _apply(
        self, key: BudgetKey, pending: list[Waiter], budget: Budget, *, careful: bool
    ) -> list[_Decided]:
        """Run each change in order on `budget` and say what each gave, answering none but
        those past their cutoff (the attempt may have waited for a lock or a read): the
        others are answered by `commit` once it knows whether this attempt was stored.

        Raises _Spoiled if what would be written does not read back: naming the change
        after which it stopped reading back when `careful`, else none."""
        decided = []
        now = self.clock()
        check = self._checker(key, budget, careful=careful)
        for waiter in pending:
            if _past_cutoff(key, waiter, now):
                continue
            before = queued(budget)
            try:
                result = waiter.change(budget)
            except Exception as error:
                decided.append(_Decided(waiter, error=error))
                continue
            # A change that queued audit records (a denial is one) must be stored with them.
            writes = waiter.needs_write(result) or queued(budget) > before
            decided.append(_Decided(waiter, result, writes=writes))
            if careful:
                try:
                    check()
                except InvalidCharge as error:
                    raise _Spoiled(waiter, error) from error
        if not careful and any(d.writes for d in decided):
            try:
                check()
            except InvalidCharge as error:
                raise _Spoiled(None, error) from error
        return decided

    def _checker(self, key: BudgetKey, budget: Budget, *, careful: bool) -> Callable[[], object]:
        """What checks that `budget`, once its changes ran, reads back and fits (taken
        before they run). Its size is only known to have grown in a careful run, which
        measures it before the first change: a batch found too big is run again carefully,
        and there the change that grew it past the limit fails alone."""
        reads: Callable[[], object]
        if self.whole:
            reads = functools.partial(check_readback, key, budget)
        elif self.readback is not None:
            reads = functools.partial(self.readback, key, budget)
        else:
            reads = functools.partial(check_readback, key, budget, held=Held.of(budget))
        limit = self.limit
        if limit is None:
            return reads
        before = [stored_size(budget) if careful else None]

        def reads_and_fits() -> None:
            reads()
            if before[0] is None:  # one check of a whole batch: any excess is looked into
                check_size(key, budget, limit=limit, before=limit)
            else:
                before[0] = check_size(key, budget, limit=limit, before=before[0])

        return reads_and_fits

    def commit(self, key: BudgetKey, batch: list[Waiter]) -> None:
        """Apply and persist one batch, and answer each waiter from the attempt that was
        stored (or needed no write): an answer from a snapshot that was never stored could
        admit a replay of a reservation that was lost. On a conflict every waiter still
        waiting is decided again on a fresh read, until its own cutoff: that, not a count of
        attempts, bounds the retries. If the attempt raises, each one gets the error."""
        pending = batch
        fresh = careful = False
        conflicts = 0
        while True:
            now = self.clock()
            pending = [waiter for waiter in pending if not _past_cutoff(key, waiter, now)]
            if not pending:
                return
            decided: list[_Decided] = []

            def apply(
                budget: Budget,
                todo: list[Waiter] = pending,
                found: list[_Decided] = decided,
                careful: bool = careful,
            ) -> Writers:
                # The attempt runs it once at most.
                found[:] = self._apply(key, todo, budget, careful=careful)
                return [(d.waiter, d.result) for d in found if d.writes]

            try:
                done = self.attempt(key, fresh, apply)
            except _Spoiled as spoiled:  # nothing was written: find the change, or fail it
                careful = spoiled.waiter is None
                if spoiled.waiter is not None:
                    spoiled.waiter.answer(error=spoiled.error)
                    pending = [waiter for waiter in pending if waiter is not spoiled.waiter]
                continue
            except Exception as error:  # NotFound, ChargeTimeout, a failed write: none stands
                for waiter in pending:
                    if not waiter.done:
                        waiter.answer(error=error)
                return
            if done:
                written = sum(d.writes for d in decided)
                if written:
                    self.stats.count(written=written)
                for d in decided:
                    d.waiter.answer(d.result, d.error)
                return
            self.stats.count(conflicts=1)
            pending = [waiter for waiter in pending if not waiter.done]  # all but the late
            if not pending:
                return
            fresh = True
            conflicts += 1
            pause = random.uniform(0, min(BACKOFF_SECONDS * conflicts, 0.05))
            self.sleep(min(pause, max(0.0, min(w.cutoff for w in pending) - self.clock())))


class Committed:
    """`update_status` and `update_status_async` of the BudgetStore protocol, for a store
    whose status changes all go through its `commits`."""

    commits: GroupCommit

    def update_status(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float = 10.0,
        needs_write: Callable[[T], bool] = lambda _: True,
    ) -> T:
        return self.commits.submit(key, change, timeout=timeout, needs_write=needs_write)

    async def update_status_async(
        self,
        key: BudgetKey,
        change: Callable[[Budget], T],
        *,
        timeout: float = 10.0,
        needs_write: Callable[[T], bool] = lambda _: True,
    ) -> T:
        return await self.commits.submit_async(
            key, change, timeout=timeout, needs_write=needs_write
        )
