"""Properties of the ledger that must hold after *any* sequence of operations."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from budgetops.apis.ledger import KEY_KEPT, Ledger
from budgetops.engine import audit, leases, ledger

T0 = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
ACCOUNTS = ("user:alice", "user:bob")
amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(40), places=2)


class LedgerMachine(RuleBasedStateMachine):
    """Random reserve / confirm / refund / lease / spend / return / reset / resize sequences."""

    keys = Bundle("keys")
    held = Bundle("leases")

    @initialize(allocation=st.integers(min_value=1, max_value=200))
    def start(self, allocation: int) -> None:
        self.ledger = Ledger()
        self.now = T0
        self.charged: dict[str, datetime] = {}
        self.log: list[str] = []
        """Keys charged, and when they last moved (reserved or settled)."""
        for name in ACCOUNTS:
            ledger.open_account(
                self.ledger,
                key=name,
                allocation=Decimal(allocation),
                window_start=T0,
                resets_at=T0 + timedelta(hours=1),
            )

    @rule(
        target=keys,
        account=st.sampled_from(ACCOUNTS),
        key=st.text("abcdef", min_size=1, max_size=3),
        amount=amounts,
    )
    def reserve(self, account: str, key: str, amount: Decimal) -> str:
        before = self.ledger.accounts[account].balance
        must_know = self.remembered(key)
        charge = ledger.reserve(
            self.ledger,
            account=account,
            key=key,
            amount=amount,
            now=self.now,
            ttl=timedelta(minutes=5),
        )
        if must_know:
            assert charge.status == "duplicate"
        elif charge.status == "duplicate":
            assert key in self.charged, "only a key charged before is a replay"
        elif amount > before:
            assert charge.status == "insufficient"
            assert self.ledger.accounts[account].balance == before
        else:
            assert charge.charged
            self.charged[key] = self.now
        return key

    def remembered(self, key: str) -> bool:
        """Whether the ledger must still know `key`: reserved, or settled within KEY_KEPT."""
        if self.ledger.reservation_of(key) is not None:
            return True
        return key in self.charged and self.charged[key] >= self.now - KEY_KEPT

    @rule(key=keys)
    def replay(self, key: str) -> None:
        """The same uid admitted again is never charged a second time while it is kept."""
        must_know = self.remembered(key)
        charge = ledger.reserve(
            self.ledger,
            account=ACCOUNTS[0],
            key=key,
            amount=Decimal(1),
            now=self.now,
            ttl=timedelta(minutes=5),
        )
        if must_know:
            assert charge.status == "duplicate"
        if charge.charged:
            self.charged[key] = self.now

    @rule(key=keys)
    def confirm(self, key: str) -> None:
        if ledger.confirm(self.ledger, key=key, now=self.now):
            self.charged[key] = self.now

    @rule(key=keys)
    def refund(self, key: str) -> None:
        if self.ledger.reservation_of(key) is not None:
            ledger.refund(self.ledger, key=key, now=self.now)
            self.charged[key] = self.now

    @rule(minutes=st.integers(min_value=1, max_value=10))
    def expire(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        for key in ledger.expired_reservations(self.ledger, now=self.now):
            assert ledger.refund(self.ledger, key=key, now=self.now) > 0
            self.charged[key] = self.now
        leases.expire(self.ledger, now=self.now)

    @rule(
        target=held,
        account=st.sampled_from(ACCOUNTS),
        lease_id=st.text("xyz", min_size=1, max_size=2),
        amount=amounts,
    )
    def lease(self, account: str, lease_id: str, amount: Decimal) -> tuple[str, str]:
        if amount > 0:
            leases.grant(
                self.ledger,
                account=account,
                lease_id=lease_id,
                requested=amount,
                now=self.now,
                ttl=timedelta(hours=1),
            )
        return (account, lease_id)

    @rule(lease=held, seq=st.integers(1, 4), amount=amounts)
    def spend(self, lease: tuple[str, str], seq: int, amount: Decimal) -> None:
        account, lease_id = lease
        # stamped when the machine started: before any close, so late reports count too
        usage = [leases.Usage(f"r{seq}", seq, amount, int(T0.timestamp()))]
        # a number sent again with another amount is refused, and a refusal changes nothing
        with contextlib.suppress(leases.UnknownLease, leases.Conflict):
            first = leases.report(
                self.ledger, account=account, lease_id=lease_id, usages=usage, now=self.now
            )
            again = leases.report(
                self.ledger, account=account, lease_id=lease_id, usages=usage, now=self.now
            )
            assert again.spent == 0, "a usage report is counted once however often it is sent"
            assert first.spent <= amount

    @rule(lease=held)
    def give_back(self, lease: tuple[str, str]) -> None:
        with contextlib.suppress(leases.UnknownLease):
            leases.close(
                self.ledger, account=lease[0], lease_id=lease[1], now=self.now, state="released"
            )

    @rule(
        account=st.sampled_from(ACCOUNTS),
        allocation=st.integers(min_value=1, max_value=200),
        carry=st.booleans(),
    )
    def reset(self, account: str, allocation: int, carry: bool) -> None:
        self.now += timedelta(hours=1)
        ledger.reset(
            self.ledger,
            account=account,
            allocation=Decimal(allocation),
            window_start=self.now,
            resets_at=self.now + timedelta(hours=1),
            carry_over=carry,
        )

    @rule(account=st.sampled_from(ACCOUNTS), allocation=st.integers(min_value=0, max_value=200))
    def resize(self, account: str, allocation: int) -> None:
        ledger.resize(self.ledger, account=account, allocation=Decimal(allocation), at=self.now)

    @invariant()
    def books_balance(self) -> None:
        assert ledger.audit(self.ledger) == []

    @invariant()
    def audit_trail_follows_every_balance(self) -> None:
        """Sealed after each step, the records form one chain that ends at the head, and
        each account's latest record states its balance now: the log alone answers what
        every balance is."""
        self.log += [
            s.line for s in audit.seal(self.ledger, budget="b", uid="", now=None, sign=None)
        ]
        report = audit.verify_chain(self.log, heads={"b": ("", self.ledger.audit_head)})
        assert report.problems == []
        latest = {}
        for line in self.log:
            record = json.loads(line)
            if "balance" in record:
                latest[record["account"]] = Decimal(record["balance"])
        for name, balance in latest.items():
            assert self.ledger.accounts[name].balance == balance

    @invariant()
    def never_overspent(self) -> None:
        for account in self.ledger.accounts.values():
            committed = account.spent + account.reserved + account.leased_out
            assert committed <= account.allocation
            assert account.balance >= 0


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(
    balance=st.integers(min_value=0, max_value=50),
    costs=st.lists(st.integers(min_value=1, max_value=5), max_size=80),
)
def test_interleaved_charges_never_overspend(balance: int, costs: list[int]) -> None:
    """However charges interleave, exactly those that fit are reserved, in arrival order."""
    book = Ledger()
    ledger.open_account(book, key="a", allocation=Decimal(balance), window_start=T0, resets_at=None)
    admitted = 0
    for index, cost in enumerate(costs):
        charge = ledger.reserve(
            book,
            account="a",
            key=f"uid-{index}",
            amount=Decimal(cost),
            now=T0,
            ttl=timedelta(minutes=5),
        )
        fits = admitted + cost <= balance
        assert charge.charged == fits
        admitted += cost if fits else 0
    assert book.accounts["a"].reserved == admitted <= balance
    assert ledger.audit(book) == []
