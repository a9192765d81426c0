"""The in-cluster store against a real API server: CAS on /status, group commit, races, watch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import config

from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision
from budgetops.engine.ledger import audit
from budgetops.store import ChargeTimeout, Unreadable
from budgetops.store.kube import KubeStore
from tests.charges import charging


def hot_budget(name: str, balance: int) -> TrustBudget:
    """A budget these tests charge directly; it governs nobody else's requests, so budgets
    left behind never charge the CSRs of later tests in the same session."""
    return TrustBudget.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "subjects": {"users": ["hot", "oncall-ann"]},
                "match": [
                    {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                ],
                "initialBalance": balance,
                "resetInterval": "24h",
            },
        }
    )


@pytest.fixture(scope="module")
def make_store(budget_crds: Any) -> Iterator[Callable[..., KubeStore]]:
    control_plane = budget_crds
    stores: list[KubeStore] = []

    def make(**kwargs: Any) -> KubeStore:
        api = config.new_client_from_config(str(control_plane.kubeconfig))
        api.configuration.connection_pool_maxsize = 64
        store = KubeStore(api, **kwargs).start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.stop()


def charge(store: KubeStore, key: BudgetKey, uid: str) -> Decision:
    change = charging(uid, account="user:hot")
    return store.update_status(key, change, needs_write=lambda d: d.cost > 0)


def settle(store: KubeStore, key: BudgetKey) -> TrustBudget:
    fresh = store.get(key)
    assert isinstance(fresh, TrustBudget)
    assert audit(fresh.status) == []
    return fresh


def test_group_commit_admits_exactly_the_balance_from_many_threads(
    make_store: Callable[..., KubeStore],
) -> None:
    store = make_store()
    key = BudgetKey.of(store.apply(hot_budget("hot-one-replica", 100)))
    with ThreadPoolExecutor(max_workers=48) as pool:
        decisions = list(pool.map(lambda i: charge(store, key, f"u{i}"), range(160)))
    assert sum(d.reason == "Charged" for d in decisions) == 100
    assert sum(not d.allowed for d in decisions) == 60
    account = settle(store, key).status.accounts["user:hot"]
    assert (account.reserved, account.balance) == (100, 0)
    assert store.stats.batches < store.stats.charges, "charges were batched into fewer writes"


def test_two_replicas_race_through_409s_without_overspending(
    make_store: Callable[..., KubeStore],
) -> None:
    first, second = make_store(), make_store()
    key = BudgetKey.of(first.apply(hot_budget("hot-two-replicas", 100)))
    time.sleep(0.5)  # let the second replica's watch see the budget
    with ThreadPoolExecutor(max_workers=64) as pool:
        jobs = [pool.submit(charge, first if i % 2 else second, key, f"r{i}") for i in range(240)]
        decisions = [job.result() for job in jobs]
    assert sum(d.reason == "Charged" for d in decisions) == 100
    assert first.stats.conflicts + second.stats.conflicts > 0, "the replicas really raced"
    account = settle(first, key).status.accounts["user:hot"]
    assert (account.reserved, account.balance) == (100, 0)


def test_a_replayed_uid_across_replicas_is_charged_once(
    make_store: Callable[..., KubeStore],
) -> None:
    first, second = make_store(), make_store()
    key = BudgetKey.of(first.apply(hot_budget("replay", 10)))
    time.sleep(0.5)
    assert charge(first, key, "same-uid").cost == 1
    assert charge(second, key, "same-uid").reason == "AlreadyCharged"
    assert settle(first, key).status.accounts["user:hot"].reserved == 1


def test_status_is_owned_whole_not_field_by_field(
    control_plane: Any, make_store: Callable[..., KubeStore]
) -> None:
    """The CRDs mark status atomic: the API server tracks one owner for all of it instead of
    every account's fields, which it recomputed on each write (~1 ms of CPU per account)."""
    store = make_store()
    key = BudgetKey.of(store.apply(hot_budget("owned-whole", 10)))

    def open_accounts(budget: Budget) -> None:
        for n in range(5):
            charging(f"k{n}", account=f"user:u{n}", cost=Decimal(1))(budget)

    store.update_status(key, open_accounts)
    written = json.loads(
        control_plane.kubectl(
            "get", "tb", "owned-whole", "--show-managed-fields", "-o", "json"
        ).stdout
    )
    status_owners = [
        entry["fieldsV1"]
        for entry in written["metadata"]["managedFields"]
        if entry.get("subresource") == "status"
    ]
    assert status_owners == [{"f:status": {}}], status_owners
    assert len(written["status"]["accounts"]) == 5
    store.delete(key)


def test_a_charge_that_cannot_finish_in_time_is_refused(
    make_store: Callable[..., KubeStore],
) -> None:
    store = make_store()
    key = BudgetKey.of(store.apply(hot_budget("slow", 10)))

    def slow(budget: Budget) -> Decision:
        time.sleep(0.5)
        return Decision(True, "Charged", Decimal(1))

    with pytest.raises(ChargeTimeout):
        store.update_status(key, slow, timeout=0.1)


def test_the_watch_sees_changes_made_outside(
    control_plane: Any, make_store: Callable[..., KubeStore]
) -> None:
    store = make_store()
    key = BudgetKey.of(store.apply(hot_budget("watched", 10)))
    control_plane.kubectl(
        "patch", "tb", "watched", "--type=merge", "-p", '{"spec": {"initialBalance": 42}}'
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        budget = next((b for b in store.list("TrustBudget") if BudgetKey.of(b) == key), None)
        if isinstance(budget, TrustBudget) and budget.spec.initial_balance == 42:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the cache never saw the new spec")
    control_plane.kubectl("delete", "tb", "watched")
    deadline = time.monotonic() + 10
    while key in store.cache.budget_keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in store.cache.budget_keys()


def test_a_break_glass_use_is_an_event_on_the_budget(
    control_plane: Any, make_store: Callable[..., KubeStore]
) -> None:
    import json

    from kubernetes import config as kube_config

    from budgetops.adapters.events import KubeEvents
    from budgetops.admission.classify import Identity
    from budgetops.admission.webhook import Admission

    store = make_store()
    document = hot_budget("glass", 1).to_wire()
    document["spec"]["breakGlass"] = {
        "subjects": {"users": ["oncall-ann"]},
        "maxCertificateTTL": "1h",
        "rateLimit": {"count": 1, "per": "24h"},
    }
    budget = TrustBudget.model_validate(document)
    key = BudgetKey.of(store.apply(budget))
    time.sleep(0.3)
    events = KubeEvents(kube_config.new_client_from_config(str(control_plane.kubeconfig)))
    admission = Admission(
        store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5), events=events
    )

    def csr(uid: str, annotations: dict[str, str]) -> dict[str, Any]:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"req-{uid}",
                "kind": {
                    "group": "certificates.k8s.io",
                    "version": "v1",
                    "kind": "CertificateSigningRequest",
                },
                "resource": {
                    "group": "certificates.k8s.io",
                    "version": "v1",
                    "resource": "certificatesigningrequests",
                },
                "operation": "CREATE",
                "name": uid,
                "userInfo": {"username": "oncall-ann", "groups": []},
                "object": {
                    "metadata": {"name": uid, "uid": uid, "annotations": annotations},
                    "spec": {"expirationSeconds": 900},
                },
            },
        }
        return asyncio.run(admission.review(json.dumps(review).encode())).body["response"]

    assert csr("ordinary", {})["allowed"]
    assert not csr("denied", {})["allowed"]
    assert csr("emergency", {"budgetops.dev/break-glass": "INC-9 login outage"})["allowed"]
    stored = store.get(key)
    assert isinstance(stored, TrustBudget)
    assert [u.reason for u in stored.status.break_glass_uses] == ["INC-9 login outage"]
    mine = "reason=BreakGlass,involvedObject.name=glass"  # other tests' budgets break glass too
    listed = json.loads(
        control_plane.kubectl(
            "get", "events", "-n", "default", "--field-selector", mine, "-o", "json"
        ).stdout
    )["items"]
    assert [(e["involvedObject"]["name"], e["type"]) for e in listed] == [("glass", "Warning")]
    assert "INC-9 login outage" in listed[0]["message"]


def test_a_budget_that_does_not_read_governs_nothing_and_stops_no_other(
    control_plane: Any, make_store: Callable[..., KubeStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Before, one status BudgetOps could not read made every list fail: /readyz went 503
    and every admission review a 500, for every budget."""
    store = make_store()
    good = BudgetKey.of(store.apply(hot_budget("still-enforced", 5)))
    broken = BudgetKey.of(store.apply(hot_budget("edited-by-hand", 5)))
    before = store.cache.version(broken)
    control_plane.kubectl(
        "patch", "tb", broken.name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"accounts": {"user:hot": {"balance": "lots"}}}}),
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and store.cache.version(broken) == before:
        time.sleep(0.05)
    with caplog.at_level("ERROR", logger="budgetops.store"):
        listed = {BudgetKey.of(b) for b in store.list("TrustBudget")}
        store.list("TrustBudget")
    assert good in listed
    assert broken not in listed
    assert store.ready()
    assert list(store.unreadable()) == [broken]  # what `kubectl budget status` shows
    assert store.unreadable()[broken].startswith("status.accounts.user:hot.")
    errors = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert errors == [f"{broken} does not read ({errors[0].split('(', 1)[1]}"]
    assert "what it governs is refused until it is fixed" in errors[0]
    assert charge(store, good, "still-works").allowed
    with pytest.raises(Unreadable, match=f"{broken} does not read"):  # refused, not a 500
        charge(store, broken, "refused")
    control_plane.kubectl("delete", "tb", good.name, broken.name)
