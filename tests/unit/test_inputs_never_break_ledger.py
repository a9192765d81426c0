"""Every input a user can send, through the real service: after each one the ledger reads back,
every account keeps its invariant, and the service still answers.

One server per test (`tests.leases.lease_api`: the webhook and the lease API over the example
budgets in SQLite, on 127.0.0.1), one agent, one live lease. Hypothesis draws lease messages,
AdmissionReviews (users, uids, annotations), CLI arguments and manifests, with hostile values
throughout: exponents past any decimal context, thousands of digits, trailing zeros (`0.010`),
six and seven decimals, NaN, lone surrogates, control characters, deep nesting, wrong types.
Numbers are written into the JSON as raw text, as an attacker's client would. A refusal of
any kind is fine; a 5xx, a ledger that no longer reads back, or a broken invariant is not.
Examples are few and derandomized, so the suite stays fast and deterministic.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from budgetops.apis.ledger import Ledger
from budgetops.engine.ledger import audit
from budgetops.store.sqlite import SQLiteStore
from tests.conftest import EXAMPLES
from tests.leases import LeaseApi, cli, create_agent, handshake, lease_api
from tests.unit.test_admission import request

EXAMPLES_RUN = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failing input is printed as drawn: shrinking
    # one that hangs the server costs minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HOSTILE_NUMBERS = [
    "1e1000000",
    "1e999999999",
    "-1e-1000000",
    "1E+30",
    "9" * 5000,
    "0." + "1" * 5000,
    "0.010",
    "0.000001",
    "0.0000001",
    "123456789012345.123456",
    "1234567890123456",
    "-0",
    "-0.01",
    "0",
    "NaN",
    "Infinity",
    "-Infinity",
]
"""Written raw into JSON (NaN and Infinity as Python's json writes them)."""

HOSTILE_TEXT = [
    "",
    " ",
    "\ud800",
    "al\udfffice",
    "\x1b[2J\x1b]0;pwned\x07",
    "\x00",
    "line\nbreak",
    "\u202eevil",
    "zero\u200bwidth",
    "user:\u0430lice",
    "x" * 300,
    "1_000",
    "+5",
    " 5 ",
    "\u0663",  # ARABIC-INDIC DIGIT THREE
    "5.0",
    "{}",
    "[" * 200,
]

numbers = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=7, max_value=10**16).map(str),
)
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12))
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
deep = st.integers(50, 3000).map(lambda depth: "[" * depth + "]" * depth)
small_amounts = st.one_of(
    st.decimals(0, 5, places=6).map(str),
    st.decimals(0, 5, places=3).map(lambda d: f"{d}0"),  # trailing zeros: 0.010
    st.sampled_from(["0.010", "0.0457", "0.000001", "1", "0.10"]),
)
"""Amounts a well-behaved client may send, in the spellings that once broke a ledger."""


class Raw:
    """A value written into JSON exactly as given: a number no encoder would write."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        shown = self.text if len(self.text) <= 40 else f"{self.text[:20]}...({len(self.text)})"
        return f"Raw({shown!r})"


def encode(body: Any) -> bytes:
    """JSON with every Raw spliced in as is (a lone surrogate stays an escape, as JSON has it)."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@raw{len(raws) - 1}@"
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(body))
    for index, raw in enumerate(raws):
        text = text.replace(f'"@raw{index}@"', raw, 1)
    return text.encode()


values = st.one_of(numbers.map(Raw), texts, json_junk, deep.map(Raw))
"""What may stand where a message wants a number or a string."""


def sometimes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` half the time, anything else otherwise: a message with every field hostile is
    refused at its first, and the paths behind it would go untried."""
    return st.booleans().flatmap(lambda ok: valid if ok else values)  # one_of would flatten


class Service:
    """The served ledger, an agent with a live lease, and the checks after each input."""

    def __init__(self, api: LeaseApi, tmp: Path) -> None:
        self.api = api
        self.tmp = tmp
        self.agent, self.token = create_agent(api.db)
        status, body, text = handshake(api, self.token, 50)
        assert status == 200, text
        self.lease_id: str = body["lease_id"]
        self.manifests = 0
        self.accepted = 0
        """Inputs answered 2xx: some must be, or only refusals were tried."""

    def post(self, path: str, body: bytes, *, token: bool = False) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=30)
        try:
            connection.request("POST", path, body=body, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.read().decode(errors="replace")
        finally:
            connection.close()

    def lease_call(self, path: str, body: Any) -> tuple[int, str]:
        return self.post(f"/api/v1{path}", encode(body), token=True)

    def readable(self) -> None:
        """Every budget reads back, from another connection; every ledger balances; the
        service still answers."""
        reader = SQLiteStore(self.api.db, mode="ro")
        try:
            budgets = reader.list()
        finally:
            reader.close()
        assert budgets, "the examples are still there"
        for budget in budgets:
            if isinstance(budget.status, Ledger):
                assert audit(budget.status) == [], budget.metadata.name
        connection = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=30)
        try:
            connection.request("GET", "/readyz")
            assert connection.getresponse().status == 200
        finally:
            connection.close()


@pytest.fixture
def service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        code, text = cli("apply", "-f", str(EXAMPLES), "--db", str(tmp / "ledger.sqlite3"))
        assert code == 0, text
        with lease_api(tmp) as api:
            yield Service(api, tmp)


def answered(service: Service, status: int, text: str) -> None:
    """Any answer but a server error: bad input is the sender's fault, said calmly."""
    assert status < 500, text
    if status < 300 and '"allowed":false' not in text.replace(" ", ""):
        service.accepted += 1


# Lease messages -------------------------------------------------------------------------


def test_handshakes(service: Service) -> None:
    @EXAMPLES_RUN
    @given(
        amount=sometimes(small_amounts.map(Raw)),
        runtime_id=sometimes(st.sampled_from(["rt-1", "pod:abc.1"])),
    )
    def run(amount: Any, runtime_id: Any) -> None:
        body = {
            "ic_token": service.token,
            "requested_budget": amount,
            "runtime_version": "0.1.0",
            "runtime_id": runtime_id,
        }
        answered(service, *service.lease_call("/auth/handshake", body))
        service.readable()

    run()
    assert service.accepted


def usage(seq: Any, cost: Any, request_id: Any, tokens: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "seq": seq,
        "tokens": tokens,
        "cost_usd": cost,
        "model": "gpt-4",
        "provider": "openai",
        "timestamp": 1764757845,
    }


def test_reports(service: Service) -> None:
    seqs = iter(range(1, 10**6))

    @EXAMPLES_RUN
    @example(cost=Raw("0.010"), seq=None, request_id="req_a", tokens=Raw("1"), count=1)
    @example(cost=Raw("0.0457"), seq=None, request_id="req_b", tokens=Raw("1"), count=2)
    @example(cost=Raw("1e1000000"), seq=None, request_id="req_c", tokens=Raw("1"), count=1)
    @given(
        cost=sometimes(small_amounts.map(Raw)),
        seq=sometimes(st.none()),
        request_id=sometimes(st.integers(0, 10**6).map(lambda n: f"req_{n}")),
        tokens=sometimes(st.integers(0, 10**6).map(str).map(Raw)),
        count=st.integers(1, 3),
    )
    def run(cost: Any, seq: Any, request_id: Any, tokens: Any, count: int) -> None:
        records = [
            usage(Raw(str(next(seqs))) if seq is None else seq, cost, request_id, tokens)
            for _ in range(count)
        ]
        body = {"lease_id": service.lease_id, "reports": records}
        answered(service, *service.lease_call("/budget/report", body))
        service.readable()

    run()
    assert service.accepted


def test_refreshes_and_releases(service: Service) -> None:
    @EXAMPLES_RUN
    @given(
        requested=sometimes(small_amounts.map(Raw)),
        remaining=sometimes(small_amounts.map(Raw)),
        spent=sometimes(small_amounts.map(Raw)),
        lease_id=sometimes(st.none()),
        release=st.integers(0, 5),
    )
    def run(requested: Any, remaining: Any, spent: Any, lease_id: Any, release: int) -> None:
        which = service.lease_id if lease_id is None else lease_id
        if release == 0:
            answered(service, *service.lease_call("/budget/release", {"lease_id": which}))
        else:
            body = {
                "lease_id": which,
                "budget_id": "agent-llm-spend",
                "requested_budget": requested,
                "current_remaining": remaining,
                "total_spent": spent,
            }
            status, text = service.lease_call("/budget/refresh", body)
            answered(service, status, text)
            if status == 200:
                service.lease_id = json.loads(text)["lease_id"]
        service.readable()

    run()
    assert service.accepted


# AdmissionReviews -----------------------------------------------------------------------

ANNOTATIONS = {
    "budgetops.dev/risk-points": st.integers(0, 30).map(str),
    "budgetops.dev/uncertainty": st.decimals(0, 3, places=2).map(str),
    "budgetops.dev/unknowns": st.dictionaries(
        st.sampled_from(["Reachability", "Identity"]), st.integers(0, 3)
    ).map(json.dumps),
    "budgetops.dev/release-id": st.sampled_from(["v1.2.3", "sha-abc", "r" * 60]),
    "budgetops.dev/change-class": st.sampled_from(["standard", "low-risk", "incident"]),
    "budgetops.dev/break-glass": st.sampled_from(["INC-1", ""]),
}
hostile_annotation = st.one_of(
    numbers,
    texts,
    json_junk.map(json.dumps),
    deep,
    st.dictionaries(st.sampled_from(["Reachability", "Identity", "x" * 80]), numbers).map(
        lambda counts: json.dumps(counts).replace('"', "")  # numbers unquoted, names bare
    ),
)
annotation_sets = st.fixed_dictionaries(
    {},
    optional={name: st.one_of(valid, hostile_annotation) for name, valid in ANNOTATIONS.items()},
)


def test_certificate_requests_from_any_user(service: Service) -> None:
    """The example CSR budget: developers pay 1 of 100 a day; `oncall` may break the glass
    with a reason once their own is spent, as ann's is here."""
    for n in range(100):
        spend = request(user="ann", uid=f"spend-{n}", groups=("developers",))
        assert service.post("/validate", encode(spend))[0] == 200

    @EXAMPLES_RUN
    @example(user="al\ud800ice", uid="uid-surrogate", groups=("developers",), reason=None)
    @example(user="\x1b[2Jeve", uid="uid-escape", groups=("developers",), reason=None)
    @example(user="ann", uid="uid-glass", groups=("developers", "oncall"), reason="INC-1 \ud800")
    @example(user="ann", uid="uid-glass", groups=("developers", "oncall"), reason="INC-1 \x1b[2J")
    @given(
        user=st.one_of(st.sampled_from(["ann", "alice", "josé"]), texts),
        uid=st.one_of(st.uuids().map(str), texts),
        groups=st.lists(texts, max_size=3).map(lambda g: ("developers", "oncall", *g)),
        reason=st.one_of(st.none(), st.just("INC-7 paged"), texts),
    )
    def run(user: str, uid: str, groups: tuple[str, ...], reason: str | None) -> None:
        annotations = {} if reason is None else {"budgetops.dev/break-glass": reason}
        csr = {
            "metadata": {"name": "csr", "uid": uid or "u", "annotations": annotations},
            "spec": {"expirationSeconds": 600},
        }
        review = request(user=user, uid=uid or "u", groups=groups, obj=csr)
        answered(service, *service.post("/validate", encode(review)))
        service.readable()

    run()
    assert service.accepted


def test_deployments_with_any_annotations(service: Service) -> None:
    @EXAMPLES_RUN
    @example(declared={"budgetops.dev/uncertainty": "1e1000000"}, uid="dep-1", image="a")
    @example(declared={"budgetops.dev/uncertainty": "9" * 5000}, uid="dep-2", image="a")
    @example(declared={"budgetops.dev/unknowns": "[" * 3000}, uid="dep-3", image="a")
    @given(declared=annotation_sets, uid=st.one_of(st.uuids().map(str), texts), image=st.text())
    def run(declared: dict[str, str], uid: str, image: str) -> None:
        deployment = {
            "metadata": {
                "name": "api",
                "uid": uid or "u",
                "labels": {"app.kubernetes.io/name": "payments-api"},
                "annotations": declared,
            },
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}},
        }
        review = request(
            user="alice",
            resource={"group": "apps", "version": "v1", "resource": "deployments"},
            kind="Deployment",
            namespace="payments",
            obj=deployment,
            uid=uid or "u",
        )
        answered(service, *service.post("/validate", encode(review)))
        service.readable()

    run()
    assert service.accepted


def test_review_envelopes_of_any_shape(service: Service) -> None:
    @EXAMPLES_RUN
    @given(where=st.sampled_from(["request", "userInfo", "object", "uid", "name"]), junk=values)
    def run(where: str, junk: Any) -> None:
        review = request(user="alice")
        if where == "request":
            review["request"] = junk
        elif where == "userInfo":
            review["request"]["userInfo"] = junk
        else:
            review["request"][where] = junk
        answered(service, *service.post("/validate", encode(review)))
        service.readable()

    run()


# CLI arguments and manifests ------------------------------------------------------------


def run_cli(service: Service, *argv: str) -> None:
    """A command the way a shell passes it (a shell's bytes that are no UTF-8 arrive as
    surrogate escapes, which the drawn texts hold too)."""
    try:
        code, out = cli(*argv, "--db", str(service.api.db))
    except SystemExit as refused:  # argparse refuses an argument with exit code 2
        code, out = refused.code, ""  # type: ignore[assignment]
    assert code in (0, 1, 2), out
    service.accepted += code == 0


cli_numbers = st.one_of(st.integers(-5, 30).map(str), small_amounts, numbers, texts)
cli_texts = st.one_of(st.sampled_from(["user:alice", "v1", "fix"]), texts)


def test_cli_commands(service: Service) -> None:
    commands: list[Callable[[str, str], tuple[str, ...]]] = [
        lambda a, b: ("consume", "--service", "payments-api", "--points", a, "--release-id", b),
        lambda a, b: ("check", "--service", "payments-api", "--points", a, "--reason", b),
        lambda a, b: ("adjust", "--service", "payments-api", "--by", a, "--reason", b),
        lambda a, b: ("report-metrics", "--service", "payments-api", "--mttr-hours", a,
                      "--change-failure-rate", a),
        lambda a, b: ("charge", "developer-certificates", "--account", b, "--id", b, "--cost", a),
        lambda a, b: ("charge", "agent-llm-spend", "--account", b, "--id", b, "--cost", a),
        lambda a, b: ("status", b),
        lambda a, b: ("receipts", b),
    ]  # fmt: skip

    @EXAMPLES_RUN
    @given(which=st.integers(0, len(commands) - 1), a=cli_numbers, b=cli_texts)
    def run(which: int, a: str, b: str) -> None:
        run_cli(service, *commands[which](a, b))
        service.readable()

    run()
    assert service.accepted


def test_manifests(service: Service) -> None:
    @EXAMPLES_RUN
    @example(balance=Raw("1e1000000"), cost=Raw("1"), key="user:${username}", reset="24h")
    @example(balance="10.010", cost="0.010", key="user:${username}", reset="24h")
    @given(
        balance=sometimes(small_amounts),
        cost=sometimes(small_amounts),
        key=sometimes(st.just("user:${username}")),
        reset=sometimes(st.just("24h")),
    )
    def run(balance: Any, cost: Any, key: Any, reset: Any) -> None:
        service.manifests += 1
        manifest = {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "TrustBudget",
            "metadata": {"name": f"prop-{service.manifests}"},
            "spec": {
                "subjects": {"groups": ["developers"]},
                "accountKey": key,
                "match": [{"group": "certificates.k8s.io", "resource": "csr"}],
                "cost": cost,
                "initialBalance": balance,
                "resetInterval": reset,
            },
        }
        path = service.tmp / f"prop-{service.manifests}.json"
        path.write_bytes(encode(manifest))  # JSON is YAML: `apply -f` reads it as a user's file
        run_cli(service, "apply", "-f", str(path))
        service.readable()
        after = request(user="alice", uid=f"after-apply-{service.manifests}")
        answered(service, *service.post("/validate", encode(after)))
        service.readable()

    run()
    assert service.accepted, "no drawn manifest was applied: the strategy tests nothing valid"
