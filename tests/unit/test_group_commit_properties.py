"""Properties of GroupCommit under scripted conflicts, failed reads and writes, and cutoffs.

The store is a compare-and-swap over a tiny ledger (a balance, reserved and settled keys) on
a fake clock; another replica ("a rival") may write between our read and our write. Whatever
the script, every answer must come from an attempt that was stored (or had nothing to store):

- a waiter answered with a result was decided in exactly one stored attempt, and that is its
  answer; a waiter answered with an error was decided in none;
- every "Charged" or "AlreadyCharged" answer has its key reserved or settled in the end;
- no key is ever reserved twice, and no two waiters are both told "Charged" for one key;
- no write includes a waiter past its cutoff, and a waiter is told it was late only then.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from budgetops.apis.resources import BudgetKey
from budgetops.store import ChargeTimeout, NotFound
from budgetops.store.commit import Apply, GroupCommit, Waiter

KEY = BudgetKey("TrustBudget", "certs")
KEYS = ("a", "b", "c")


@dataclass
class Ledger:
    version: int = 0
    balance: int = 0
    reserved: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)

    def copy(self) -> Ledger:
        return Ledger(self.version, self.balance, set(self.reserved), set(self.settled))

    def known(self, key: str) -> bool:
        return key in self.reserved or key in self.settled


@dataclass(frozen=True)
class Answer:
    call: int
    """Which run of which change gave it: see Store.calls."""
    reason: str

    @property
    def allowed(self) -> bool:
        return self.reason != "Exhausted"


def decide(ledger: Ledger, key: str, dry_run: bool) -> str:
    """Reserve, replay, dry run or deny, as admission does."""
    if ledger.known(key):
        return "AlreadyCharged"
    if ledger.balance < 1:
        return "Exhausted"
    if dry_run:
        return "DryRun"
    ledger.balance -= 1
    ledger.reserved.add(key)
    return "Charged"


@dataclass(frozen=True)
class Step:
    """What happens in one attempt, in order: it waits `wait` seconds (for a lock or a
    read), its read fails, or a rival writes between its read and its write, or its write
    fails."""

    wait: float = 0.0
    fails: str = ""
    """"", "read" or "write"."""
    error: str = "timeout"
    rival: tuple[str, str] | None = None
    """("spend" | "reserve" | "settle" | "noop", key)."""


ERRORS: dict[str, Callable[[], Exception]] = {
    "missing": lambda: NotFound(str(KEY)),
    "timeout": lambda: ChargeTimeout(f"{KEY}: the API server did not answer"),
    "other": lambda: RuntimeError("the write failed"),
}


class FakeClock:
    """Monotonic seconds that pass only when an attempt waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Store:
    """A compare-and-swap store over one Ledger, following `script` one step per attempt
    (then plain attempts), and recording what the properties need."""

    def __init__(
        self,
        balance: int,
        script: list[Step],
        clock: Callable[[], float],
        wait: Callable[[float], None],
    ) -> None:
        self.stored = Ledger(balance=balance)
        self.script = list(script)
        self.clock = clock
        self.wait = wait
        self.lock = threading.Lock()
        self.calls: list[tuple[int, int]] = []
        """Per run of a change: (waiter, attempt)."""
        self.attempts = 0
        self.stored_attempts: set[int] = set()
        self.raised: list[Exception] = []
        self.reservations: Counter[str] = Counter()
        self.late_writers: list[Waiter] = []

    def change(self, waiter: int, key: str, dry_run: bool) -> Callable[[Any], Answer]:
        def run(ledger: Any) -> Answer:
            assert isinstance(ledger, Ledger)
            self.calls.append((waiter, self.attempts))
            return Answer(len(self.calls) - 1, decide(ledger, key, dry_run))

        return run

    def attempt(self, key: BudgetKey, fresh: bool, apply: Apply) -> bool:
        with self.lock:
            self.attempts += 1
            step = self.script.pop(0) if self.script else Step()
            self.wait(step.wait)
            if step.fails == "read":
                raise self._error(step)
            snapshot = self.stored.copy()
            writers = apply(snapshot)
            now = self.clock()
            self.late_writers += [w for w, _ in writers if w.cutoff <= now]
            if step.rival is not None:
                self._rival(*step.rival)
            if not writers:
                self.stored_attempts.add(self.attempts)
                return True
            if step.fails == "write":
                raise self._error(step)
            if snapshot.version != self.stored.version:
                return False
            self.reservations.update(snapshot.reserved - self.stored.reserved)
            snapshot.version += 1
            self.stored = snapshot
            self.stored_attempts.add(self.attempts)
            return True

    def _error(self, step: Step) -> Exception:
        error = ERRORS[step.error]()
        self.raised.append(error)
        return error

    def _rival(self, what: str, key: str) -> None:
        ledger = self.stored
        if what == "spend":
            ledger.balance = max(0, ledger.balance - 1)
        elif what == "reserve" and not ledger.known(key) and ledger.balance >= 1:
            ledger.balance -= 1
            ledger.reserved.add(key)
            self.reservations[key] += 1
        elif what == "settle" and key in ledger.reserved:
            ledger.reserved.remove(key)
            ledger.settled.add(key)
        ledger.version += 1

    def check(self, answers: dict[int, tuple[str, bool, Answer | BaseException]]) -> None:
        """The properties, over every waiter's (key, dry run, answer)."""
        assert not self.late_writers, "a write included a waiter past its cutoff"
        assert max(self.reservations.values(), default=0) <= 1, "a key was reserved twice"
        decided_in_stored = Counter(
            waiter for waiter, attempt in self.calls if attempt in self.stored_attempts
        )
        charged: Counter[str] = Counter()
        for waiter, (key, dry_run, answer) in answers.items():
            if isinstance(answer, BaseException):
                assert decided_in_stored[waiter] == 0, "decided in a stored attempt, yet failed"
                assert isinstance(answer, ChargeTimeout) or any(
                    answer is error for error in self.raised
                ), answer
                continue
            assert self.calls[answer.call][0] == waiter, "answered with another's decision"
            assert self.calls[answer.call][1] in self.stored_attempts, (
                f"{answer.reason} came from an attempt that was never stored"
            )
            assert decided_in_stored[waiter] == 1
            if answer.reason == "AlreadyCharged" or (answer.allowed and not dry_run):
                assert self.stored.known(key), f"{answer.reason} for {key}, never stored"
            if answer.reason == "Charged":
                charged[key] += 1
                assert self.reservations[key] == 1
        assert max(charged.values(), default=0) <= 1, "two waiters charged for one key"


steps = st.builds(
    Step,
    wait=st.sampled_from([0.0, 0.0, 0.0, 0.6, 2.0]),
    fails=st.sampled_from(["", "", "", "read", "write"]),
    error=st.sampled_from(sorted(ERRORS)),
    rival=st.none()
    | st.tuples(st.sampled_from(["spend", "reserve", "settle", "noop"]), st.sampled_from(KEYS)),
)
charges = st.tuples(
    st.sampled_from(KEYS), st.booleans(), st.sampled_from([0.0, 0.5, 1.0, 30.0, 30.0, 30.0])
)
"""(key, dry run, seconds to its cutoff)."""


@settings(max_examples=300, deadline=None)
@given(
    balance=st.integers(0, 3),
    script=st.lists(steps, max_size=8),
    batches=st.lists(st.lists(charges, min_size=1, max_size=5), min_size=1, max_size=4),
)
def test_every_answer_of_a_batch_stands_on_stored_state(
    balance: int, script: list[Step], batches: list[list[tuple[str, bool, float]]]
) -> None:
    clock = FakeClock()
    store = Store(balance, script, clock, clock.advance)
    commits = GroupCommit(store.attempt, clock=clock, sleep=lambda _: None)
    answers: dict[int, tuple[str, bool, Answer | BaseException]] = {}
    number = itertools.count()
    for batch in batches:
        waiters = []
        for key, dry_run, seconds in batch:
            index = next(number)
            cutoff = clock() + seconds
            told: list[float] = []
            waiter = Waiter(
                store.change(index, key, dry_run),
                lambda answer: answer.reason == "Charged",
                deadline=cutoff + 1,
                cutoff=cutoff,
                wake=lambda told=told: told.append(clock()),
            )
            waiters.append((index, key, dry_run, waiter, told))
        commits.commit(KEY, [waiter for _, _, _, waiter, _ in waiters])
        for index, key, dry_run, waiter, told in waiters:
            assert waiter.done, "every waiter of a batch is answered when commit returns"
            assert len(told) == 1, "and woken once"
            if isinstance(waiter.error, ChargeTimeout) and "in time" in str(waiter.error):
                assert waiter.cutoff <= told[0], "told it was late before its cutoff"
            answers[index] = (key, dry_run, waiter.error or waiter.result)
    store.check(answers)


@settings(max_examples=25, deadline=None)
@given(
    balance=st.integers(0, 3),
    script=st.lists(steps.filter(lambda s: s.wait == 0), max_size=6),
    callers=st.lists(st.lists(charges, min_size=1, max_size=3), min_size=2, max_size=4),
)
def test_threads_and_coroutines_get_answers_that_stand_on_stored_state(
    balance: int, script: list[Step], callers: list[list[tuple[str, bool, float]]]
) -> None:
    """The same through `submit` from threads and `submit_async` from one event loop, on
    the real clock: the first caller's charges are coroutines, the others' threads."""
    store = Store(balance, script, time.monotonic, time.sleep)
    commits = GroupCommit(store.attempt)
    answers: dict[int, tuple[str, bool, Answer | BaseException]] = {}
    number = itertools.count()
    planned = [[(next(number), key, dry_run) for key, dry_run, _ in charges] for charges in callers]

    def needs_write(answer: Answer) -> bool:
        return answer.reason == "Charged"

    def thread(charges: list[tuple[int, str, bool]]) -> None:
        for index, key, dry_run in charges:
            try:
                answer: Answer | BaseException = commits.submit(
                    KEY, store.change(index, key, dry_run), timeout=10, needs_write=needs_write
                )
            except Exception as error:
                answer = error
            answers[index] = (key, dry_run, answer)

    async def coroutine(index: int, key: str, dry_run: bool) -> None:
        try:
            answer: Answer | BaseException = await commits.submit_async(
                KEY, store.change(index, key, dry_run), timeout=10, needs_write=needs_write
            )
        except Exception as error:
            answer = error
        answers[index] = (key, dry_run, answer)

    async def loop(charges: list[tuple[int, str, bool]]) -> None:
        await asyncio.gather(*(coroutine(*charge) for charge in charges))

    threads = [threading.Thread(target=asyncio.run, args=(loop(planned[0]),))]
    threads += [threading.Thread(target=thread, args=(charges,)) for charges in planned[1:]]
    for started in threads:
        started.start()
    for started in threads:
        started.join(15)
    assert len(answers) == sum(map(len, planned)), "every caller was answered"
    assert not any(
        isinstance(answer, ChargeTimeout) and "within" in str(answer)
        for _, _, answer in answers.values()
    ), "no caller gave up waiting"
    store.check(answers)
