"""Shadow mode counts: a warn-mode budget charges exactly what an enforcing budget would
have charged had it let every request through, and it never denies.

The twin that lets everything through is the same budget, enforcing, with every change
class allowed in every band (and no unknowns limit): what it charges is what each request
costs, capped at what is left. Whether the enforcing budget would have refused a request is
asked of it on the warn budget's own state, as a dry run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.apis.riskbudget import ChangeClass
from budgetops.engine.decisions import Release, admit_risk, admit_trust
from budgetops.engine.ledger import audit
from budgetops.engine.unknowns import UnknownCounts

NOW = datetime(2026, 1, 10, tzinfo=UTC)
TTL = timedelta(minutes=5)
CLASSES: tuple[ChangeClass, ...] = get_args(ChangeClass)
EVERYTHING = {band: list(CLASSES) for band in ("green", "yellow", "red", "exhausted")}


def risk(enforcement: str, **spec: Any) -> RiskBudget:
    base = {"serviceId": "api", "allocation": 100, "enforcement": enforcement}
    return RiskBudget.model_validate(
        {"metadata": {"name": "api", "namespace": "default"}, "spec": base | spec}
    )


releases = st.lists(
    st.tuples(
        st.sampled_from([f"v{n}" for n in range(12)]),  # repeats are replays
        st.integers(min_value=0, max_value=60),
        st.sampled_from(CLASSES),
        st.integers(min_value=0, max_value=4),  # unknowns
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(releases=releases)
def test_warn_mode_charges_what_letting_everything_through_would(
    releases: list[tuple[str, int, ChangeClass, int]],
) -> None:
    limits = {"maxUnknownCount": 2, "maxCumulativeUncertainty": "10", "action": "block"}
    warn = risk("warn", unknowns=limits)
    enforce = risk("enforce", unknowns=limits)
    open_ = risk("enforce", bands=EVERYTHING)
    for n, (key, points, change_class, unknowns) in enumerate(releases):
        now = NOW + timedelta(seconds=n)
        counts = UnknownCounts(by_reason={"Reachability": unknowns})
        item = Release(key=key, points=points, change_class=change_class, unknowns=counts)
        would = admit_risk(
            warn.status.model_copy(deep=True),
            enforce.spec,
            release=item,
            now=now,
            ttl=TTL,
            dry_run=True,
        )
        shadow = admit_risk(warn.status, warn.spec, release=item, now=now, ttl=TTL)
        through = admit_risk(
            open_.status, open_.spec, release=Release(key, points, change_class), now=now, ttl=TTL
        )
        assert shadow.allowed
        assert shadow.cost == through.cost
        assert (shadow.reason == "Warned") is (not would.allowed)
        assert warn.status.consumed == open_.status.consumed
    assert audit(warn.status) == []


@settings(max_examples=150, deadline=None)
@given(
    issuances=st.lists(
        st.tuples(
            st.sampled_from(["user:alice", "user:bob"]),
            st.sampled_from([f"uid-{n}" for n in range(15)]),
            st.integers(min_value=1, max_value=4),
        ),
        max_size=30,
    ),
    allocation=st.integers(min_value=1, max_value=12),
)
def test_a_warn_trust_budget_charges_what_letting_everything_through_would(
    issuances: list[tuple[str, str, int]], allocation: int
) -> None:
    def budget(enforcement: str) -> TrustBudget:
        spec = {
            "subjects": {"patterns": ["*"]},
            "match": [{"resource": "certificatesigningrequests"}],
            "initialBalance": allocation,
            "enforcement": enforcement,
        }
        return TrustBudget.model_validate({"metadata": {"name": "t"}, "spec": spec})

    warn, enforce, through = budget("warn"), budget("enforce"), budget("enforce")
    for account, key, cost in issuances:
        arguments: dict[str, Any] = {"account": account, "key": key, "ref": key, "now": NOW}
        would = admit_trust(
            warn.status.model_copy(deep=True),
            enforce.spec,
            cost=Decimal(cost),
            ttl=TTL,
            dry_run=True,
            **arguments,
        )
        shadow = admit_trust(warn.status, warn.spec, cost=Decimal(cost), ttl=TTL, **arguments)
        held = through.status.accounts.get(account)
        left = held.balance if held is not None else Decimal(allocation)
        capped = admit_trust(
            through.status, through.spec, cost=min(Decimal(cost), left), ttl=TTL, **arguments
        )
        assert shadow.allowed
        assert shadow.cost == capped.cost
        assert (shadow.reason == "Warned") is (not would.allowed)
        assert {k: a.reserved for k, a in warn.status.accounts.items()} == {
            k: a.reserved for k, a in through.status.accounts.items()
        }
    assert audit(warn.status) == []
