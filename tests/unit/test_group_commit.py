"""Group commit over a store whose writes go wrong as a test says: a forced conflict or a failed
write shows that no waiter is answered from a snapshot that was never stored, and that a
denial decided again on fresh state stays a decision of its own.

GroupCommit is the same in every store, so most of this runs on MemStore and its public
fault hooks. What only KubeStore does (an API server that does not answer becomes a
retriable ChargeTimeout) runs on KubeStore itself, with its two I/O points replaced."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from urllib3.exceptions import ReadTimeoutError

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.decisions import Decision
from budgetops.store import ChargeTimeout
from budgetops.store.commit import Waiter, _Lane
from budgetops.store.kube import KubeStore
from tests.charges import charging
from tests.memstore import MemStore

from .test_decisions import NOW, trust_budget

KEY = BudgetKey("TrustBudget", "certs")


class ScriptedStore(KubeStore):
    """KubeStore over a budget in memory; `_write` answers 409 as scripted. Kept for what
    KubeStore alone does around its reads and writes (`_attempting`), which has no public
    seam: the HTTP round trips are the private methods replaced here."""

    def __init__(self, budget: TrustBudget, conflicts: int) -> None:
        super().__init__(client.ApiClient(client.Configuration()))
        self.stored = budget
        self.conflicts_left = conflicts
        self.snapshots: list[bool] = []

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        self.snapshots.append(fresh)
        return self.stored.model_copy(deep=True)

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        assert isinstance(budget, TrustBudget)
        if self.conflicts_left:
            self.conflicts_left -= 1
            return False
        self.stored = budget
        return True


def in_memory(budget: TrustBudget, *, conflicts: int = 0) -> MemStore:
    """`budget` in a MemStore with group commit on; its next `conflicts` writes lose."""
    store = MemStore(group_commit=True)
    store.apply(budget)
    store.conflicts = conflicts
    return store


def held(store: MemStore | ScriptedStore) -> TrustBudget:
    """The budget as the store holds it now."""
    budget = store.stored if isinstance(store, ScriptedStore) else store.get(KEY)
    assert isinstance(budget, TrustBudget)
    return budget


def counted_charge(uid: str, runs: dict[str, int]) -> Any:
    charge = charging(uid, now=NOW)

    def change(budget: Budget) -> Decision:
        runs[uid] = runs.get(uid, 0) + 1
        return charge(budget)

    return change


def waiter(change: Any, seconds: float = 5) -> Waiter:
    deadline = time.monotonic() + seconds
    return Waiter(change, lambda d: d.changes_ledger, deadline, deadline)


def test_a_denied_waiter_is_decided_again_after_a_conflict_and_stays_denied() -> None:
    store = in_memory(trust_budget(initialBalance=1), conflicts=1)
    runs: dict[str, int] = {}
    first, second = waiter(counted_charge("a", runs)), waiter(counted_charge("b", runs))
    store.commits.commit(KEY, [first, second])
    assert first.result.reason == "Charged"
    assert second.result.reason == "Exhausted", "denied on the stored snapshot that charged 'a'"
    assert runs == {"a": 2, "b": 2}, "the denial too was decided again, on the fresh read"
    assert store.reads == [False, True], "the retry read the budget afresh"
    assert held(store).status.accounts["user:alice"].reserved == 1


def test_every_waiter_of_a_batch_is_answered_by_one_write() -> None:
    store = in_memory(trust_budget(initialBalance=10))
    runs: dict[str, int] = {}
    waiters = [waiter(counted_charge(f"u{i}", runs)) for i in range(5)]
    store.commits.commit(KEY, waiters)
    assert all(w.done and w.result.reason == "Charged" for w in waiters)
    stats = store.commits.stats
    assert (stats.batches, stats.charges, stats.largest_batch) == (1, 5, 5)


def test_endless_conflicts_end_at_the_deadline_in_a_retriable_refusal() -> None:
    store = in_memory(trust_budget(initialBalance=10), conflicts=10**9)
    stuck = waiter(counted_charge("x", {}), seconds=0.3)
    done = threading.Event()
    threading.Thread(target=lambda: (store.commits.commit(KEY, [stuck]), done.set())).start()
    assert done.wait(5), "the retries stop at the waiter's deadline"
    assert type(stuck.error).__name__ == "ChargeTimeout"
    assert "could not be charged in time" in str(stuck.error)
    assert store.commits.stats.conflicts > 1, "it did retry until then"


def gated(budget: TrustBudget) -> tuple[MemStore, threading.Event]:
    """A store whose writes wait for the event, so the test decides when a batch may finish."""
    store, gate = in_memory(budget), threading.Event()

    def wait(key: BudgetKey, budget: Budget) -> None:
        assert gate.wait(10), "the test never opened the gate"

    store.before_write = wait
    return store, gate


def charge_async(store: MemStore, uid: str, runs: dict[str, int], timeout: float = 5) -> Any:
    return store.update_status_async(
        KEY, counted_charge(uid, runs), timeout=timeout, needs_write=lambda d: d.changes_ledger
    )


def test_coroutines_share_batches_and_the_loop_runs_while_they_wait() -> None:
    store, gate = gated(trust_budget(initialBalance=100))
    runs: dict[str, int] = {}

    async def main() -> list[Decision]:
        charges = asyncio.gather(*(charge_async(store, f"u{i}", runs) for i in range(20)))
        for _ in range(3):  # the loop is free while the first batch is held at the gate
            await asyncio.sleep(0.01)
        gate.set()
        return await charges

    decisions = asyncio.run(main())
    assert [d.reason for d in decisions] == ["Charged"] * 20
    assert held(store).status.accounts["user:alice"].reserved == 20
    stats = store.commits.stats
    assert stats.charges == 20
    assert stats.batches <= 2, "all that arrived while one batch was written share the next"


def test_a_coroutine_that_gave_up_leaves_the_writer_working() -> None:
    store, gate = gated(trust_budget(initialBalance=100))

    async def impatient() -> None:
        await charge_async(store, "late", {}, timeout=0.2)

    with pytest.raises(ChargeTimeout, match=r"could not be charged within 0\.2s"):
        asyncio.run(impatient())  # its loop is closed before the writer answers it
    gate.set()
    later = store.update_status(
        KEY, counted_charge("next", {}), timeout=5, needs_write=lambda d: d.changes_ledger
    )
    assert later.reason == "Charged", "answering a closed loop did not kill the writer"


def slow_writes(budget: TrustBudget, delays: list[float]) -> MemStore:
    """A store whose writes each take as long as the test says, in order: `delays` seconds."""
    store = in_memory(budget)
    store.before_write = lambda key, budget: time.sleep(delays.pop(0))
    return store


def test_a_change_is_never_written_after_its_caller_stopped_waiting() -> None:
    """The second charge waits behind a slow write until 0.25 s before its deadline. Written
    then (0.5 s), it would land after its caller was told to try again: a refused request,
    charged. Past its cutoff it is answered with ChargeTimeout and never written."""
    store = slow_writes(trust_budget(initialBalance=10), delays=[1.8, 0.5])
    first = threading.Thread(
        target=store.update_status,
        args=(KEY, counted_charge("first", {})),
        kwargs={"timeout": 5, "needs_write": lambda d: d.changes_ledger},
    )
    first.start()
    time.sleep(0.05)  # the first write is under way
    with pytest.raises(ChargeTimeout):  # cutoff at 1.55 s, behind a write that ends at 1.8 s
        store.update_status(
            KEY, counted_charge("second", {}), timeout=2.0, needs_write=lambda d: d.changes_ledger
        )
    first.join()
    time.sleep(0.6)  # time for a late write to land, had one started
    account = held(store).status.accounts["user:alice"]
    assert account.reserved == 1, "only the charge whose caller heard 'allowed' was written"
    assert store.commits.stats.charges == 1


class Unanswered(ScriptedStore):
    """An API server that never answers the fresh read a conflict calls for."""

    def _snapshot(self, key: BudgetKey, *, fresh: bool) -> Budget:
        if fresh:
            raise ReadTimeoutError(None, "/apis/budgetops.dev", "Read timed out.")
        return super()._snapshot(key, fresh=fresh)


def test_an_api_server_that_does_not_answer_is_a_retriable_refusal() -> None:
    store = Unanswered(trust_budget(initialBalance=10), conflicts=1)
    with pytest.raises(ChargeTimeout, match="the API server did not answer"):
        store.update_status(
            KEY, counted_charge("a", {}), timeout=5, needs_write=lambda d: d.changes_ledger
        )


def rivalled(budget: TrustBudget, rival: TrustBudget) -> MemStore:
    """Another replica writes first: the first write conflicts, and the budget read back
    afresh is the rival's, with the balance spent."""
    store = in_memory(budget)
    store.rival = rival
    return store


class Failing(ScriptedStore):
    """An API server that never answers the status write: KubeStore makes that a retriable
    ChargeTimeout, which the replay must share."""

    def _write(self, key: BudgetKey, budget: Budget) -> bool:
        raise ReadTimeoutError(None, "/apis/budgetops.dev", "Read timed out.")


def spent() -> TrustBudget:
    rival = trust_budget(initialBalance=1)
    assert charging("rival", now=NOW)(rival).reason == "Charged"
    return rival


@pytest.mark.parametrize(
    "make",
    [
        lambda: rivalled(trust_budget(initialBalance=1), spent()),
        lambda: Failing(trust_budget(), conflicts=0),
    ],
    ids=["conflict", "failed-write"],
)
def test_a_replay_is_not_admitted_from_a_batch_that_was_never_stored(
    make: Callable[[], MemStore | ScriptedStore],
) -> None:
    """The first waiter reserves k and the second replays k in the same batch: the replay
    needs no write, but its 'AlreadyCharged' stands only on the first one's reservation. If
    that is never stored (a rival spent the balance first, or the write failed), the replay
    must not be admitted free."""
    store = make()
    runs: dict[str, int] = {}
    first, replay = waiter(counted_charge("k", runs)), waiter(counted_charge("k", runs))
    store.commits._drain(KEY, _Lane([first, replay]))  # one batch, as a writer thread takes it
    assert first.done
    assert replay.done
    reserved = held(store).status.reservation_of("k") is not None
    for answered in (first, replay):
        if answered.error is None and answered.result.allowed:
            assert reserved, f"{answered.result.reason}, yet nothing was stored under k"
    if isinstance(store, Failing):
        assert isinstance(first.error, ChargeTimeout)
        assert replay.error is first.error, "the replay shares the failed write's fate"
    else:
        assert [first.result.reason, replay.result.reason] == ["Exhausted", "Exhausted"]
        assert runs == {"k": 4}, "both were decided again on the rival's budget"
