"""Classification of admission requests, and the webhook server over loopback HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from budgetops.admission.classify import Identity, Refused, account_keys, classify
from budgetops.admission.review import AdmissionRequest
from budgetops.admission.server import serve
from budgetops.admission.webhook import MAX_BODY, Admission
from budgetops.apis.resources import BudgetKey, RiskBudget, TrustBudget
from budgetops.store import BudgetStore, ChargeTimeout
from budgetops.store.sqlite import SQLiteStore
from tests.memstore import MemStore

from .test_decisions import risk_budget, trust_budget

NOW = datetime(2026, 1, 1, 15, 30, tzinfo=UTC)
CSR = {"group": "certificates.k8s.io", "version": "v1", "resource": "certificatesigningrequests"}


def request(
    *,
    user: str = "alice",
    groups: tuple[str, ...] = ("developers", "system:authenticated"),
    resource: dict[str, str] | None = None,
    kind: str = "CertificateSigningRequest",
    namespace: str = "",
    operation: str = "CREATE",
    obj: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    uid: str = "uid-1",
    dry_run: bool = False,
) -> dict[str, Any]:
    body = {
        "uid": f"req-{uid}",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": resource or CSR,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "groups": list(groups)},
        "object": obj or {"metadata": {"name": f"csr-{uid}", "uid": uid}},
        "oldObject": old,
        "dryRun": dry_run,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def parsed(**kwargs: Any) -> AdmissionRequest:
    return AdmissionRequest.model_validate(request(**kwargs)["request"])


def developers() -> TrustBudget:
    return trust_budget(subjects={"groups": ["developers"], "exclude": {"users": ["bot"]}})


@pytest.mark.parametrize(
    ("template", "kwargs", "expected"),
    [
        ("user:${username}", {}, "user:alice"),
        ("group:${group}", {}, "group:developers"),
        ("namespace:${namespace}", {"namespace": "payments"}, "namespace:payments"),
        (
            "serviceaccount:${namespace}/${name}",
            {"user": "system:serviceaccount:ci:builder", "namespace": "payments"},
            "serviceaccount:ci/builder",
        ),
        (
            "namespace:${namespace}",
            {"user": "system:serviceaccount:cert-manager:cert-manager", "namespace": "payments"},
            "namespace:payments",
        ),
    ],
)
def test_account_keys(template: str, kwargs: dict[str, Any], expected: str) -> None:
    spec = trust_budget(subjects={"groups": ["developers"]}, accountKey=template).spec
    assert account_keys(spec, parsed(**kwargs)) == [expected]


def test_an_account_key_the_requester_cannot_fill_is_refused_calmly() -> None:
    spec = trust_budget(accountKey="namespace:${namespace}").spec
    with pytest.raises(Refused, match=r"needs \$\{namespace\}, which alice does not have here"):
        account_keys(spec, parsed())


def test_only_governed_requesters_for_matched_resources_are_charged() -> None:
    budgets = [developers()]
    assert len(classify(budgets, parsed(), Identity()).trust) == 1
    assert classify(budgets, parsed(groups=("ops",)), Identity()).trust == []
    assert classify(budgets, parsed(user="bot"), Identity()).trust == [], "excluded"
    assert classify(budgets, parsed(operation="UPDATE"), Identity()).trust == []
    other = {"group": "", "version": "v1", "resource": "configmaps"}
    assert classify(budgets, parsed(resource=other), Identity()).trust == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"groups": ("system:nodes", "developers")},
        {"groups": ("system:bootstrappers", "developers")},
        {"user": "system:serviceaccount:kube-system:certificate-controller"},
        {"user": "system:serviceaccount:budgetops:budgetops"},
    ],
)
def test_nodes_bootstrappers_kube_system_and_ourselves_are_never_charged(
    kwargs: dict[str, Any],
) -> None:
    budgets = [trust_budget(subjects={"patterns": ["*"]})]
    identity = Identity(own_service_account="system:serviceaccount:budgetops:budgetops")
    assert classify(budgets, parsed(**kwargs), identity).trust == []


DEPLOYMENTS = {"group": "apps", "version": "v1", "resource": "deployments"}


def deployment(image: str = "app:1", replicas: int = 1, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "api",
            "namespace": "payments",
            "uid": "dep-1",
            "labels": {"app": "api"},
            "annotations": annotations,
        },
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "a", "image": image}]}},
        },
    }


def shipped(obj: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
    budget = risk_budget(selector={"matchLabels": {"app": "api"}})
    return classify(
        [budget],
        parsed(
            kind="Deployment",
            resource=DEPLOYMENTS,
            namespace="payments",
            operation="UPDATE" if old else "CREATE",
            obj=obj,
            old=old,
        ),
        Identity(),
    ).risk


def test_a_release_is_charged_on_create_and_on_a_new_template_only() -> None:
    [created] = shipped(deployment(**{"budgetops.dev/risk-points": "25"}))
    assert (created.release.points, created.release.key) == (25, "dep-1")
    assert shipped(deployment(replicas=3), old=deployment()) == [], "scaling costs nothing"
    [update] = shipped(deployment(image="app:2"), old=deployment())
    assert update.release.points == 10, "the budget's default when undeclared"
    assert update.release.key.startswith("dep-1/")
    [again] = shipped(deployment(image="app:2"), old=deployment(image="app:3"))
    assert again.release.key == update.release.key, "the same template is the same release"


def test_a_declared_release_id_is_the_key() -> None:
    [charge] = shipped(deployment(**{"budgetops.dev/release-id": "v1.2.3"}))
    assert charge.release.key == "release:v1.2.3"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"budgetops.dev/risk-points": "lots"},
            "must be a whole number of risk points, not 'lots'",
        ),
        ({"budgetops.dev/risk-points": "-5"}, "must be between 0 and 100000, not -5"),
        ({"budgetops.dev/change-class": "yolo"}, "must be one of standard, low-risk"),
        ({"budgetops.dev/unknowns": "[1]"}, "must be a JSON object of counts"),
        ({"budgetops.dev/uncertainty": "NaN"}, "must be a non-negative number"),
    ],
)
def test_malformed_release_annotations_are_refused(
    annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(Refused, match=message):
        shipped(deployment(**annotations))


def test_workloads_outside_the_selector_or_namespace_are_not_charged() -> None:
    budget = risk_budget(selector={"matchLabels": {"app": "other"}})
    review = parsed(kind="Deployment", resource=DEPLOYMENTS, namespace="payments", obj=deployment())
    assert classify([budget], review, Identity()).risk == []


# The server, over real HTTP on 127.0.0.1, on the embedded store.


def admitting(store: BudgetStore) -> Admission:
    """Admission over `store` at NOW, with the default identity rules."""
    return Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[str, int, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(trust_budget(subjects={"groups": ["developers"]}, initialBalance=100))
    store.apply(risk_budget(selector={"matchLabels": {"app": "api"}}))
    admission = admitting(store)
    server = serve(admission, host="127.0.0.1", port=0, tls=None)
    yield "127.0.0.1", server.port, store
    server.close()


def post(
    target: tuple[str, int, Any],
    body: bytes,
    path: str = "/validate",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(target[0], target[1], timeout=10)
    sent = {"Content-Type": "application/json"} | (headers or {})  # as the API server sends
    connection.request("POST", path, body=body, headers=sent)
    reply = connection.getresponse()
    result = reply.status, json.loads(reply.read())
    connection.close()
    return result


def test_the_101st_issuance_is_denied_and_each_uid_charged_once(webhook: Any) -> None:
    answers = [post(webhook, json.dumps(request(uid=f"u{i}")).encode())[1] for i in range(101)]
    assert all(a["response"]["allowed"] for a in answers[:100])
    assert answers[0]["response"]["warnings"] == [
        "Trust budget user:alice: cost 1, remaining 99 of 100, resets 2026-01-02T00:00:00Z"
    ]
    denied = answers[100]["response"]
    assert denied["allowed"] is False
    assert denied["status"]["message"] == (
        "TrustBudget/certs: Trust budget exhausted. This request requires 1 points; 0 remain. "
        "Budget resets at 2026-01-02T00:00:00Z."
    )
    replay = post(webhook, json.dumps(request(uid="u5")).encode())[1]["response"]
    assert replay["allowed"] is True, "an API server retry of an admitted object passes"
    budget = webhook[2].get(BudgetKey("TrustBudget", "certs"))
    assert budget.status.accounts["user:alice"].reserved == 100


def test_dry_run_charges_nothing(webhook: Any) -> None:
    answer = post(webhook, json.dumps(request(dry_run=True)).encode())[1]["response"]
    assert answer["allowed"]
    assert "dry run, not charged" in answer["warnings"][0]
    budget = webhook[2].get(BudgetKey("TrustBudget", "certs"))
    assert budget.status.accounts == {}, "a dry run writes nothing, not even a new account"


def test_a_bad_annotation_is_a_clear_denial(webhook: Any) -> None:
    review = request(
        kind="Deployment",
        resource=DEPLOYMENTS,
        namespace="payments",
        obj=deployment(**{"budgetops.dev/risk-points": "-1"}),
    )
    status, body = post(webhook, json.dumps(review).encode())
    assert status == 200
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 400
    assert (
        "budgetops.dev/risk-points must be between 0 and 100000"
        in (body["response"]["status"]["message"])
    )
    assert isinstance(
        webhook[2].get(BudgetKey("RiskBudget", "payments-api", "payments")), RiskBudget
    )


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"[]", 400, "must be a JSON object"),
        (
            json.dumps({**request(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            400,
            "apiVersion: Input should be 'admission.k8s.io/v1'",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            400,
            "request: Field required",
        ),
        (
            json.dumps(request(resource={"group": "x"})).encode(),
            400,
            "request.resource.resource: Field required",
        ),
        (b"\xff\xfe", 400, "the body is not JSON"),
        (b"[" * 100_000, 400, "nests more than 100 levels deep"),
    ],
)
def test_malformed_reviews_get_a_clear_400(
    webhook: Any, body: bytes, status: int, error: str
) -> None:
    got, answer = post(webhook, body)
    assert got == status
    assert error in answer["error"]


def test_unknown_resources_are_allowed_untouched(webhook: Any) -> None:
    other = request(
        resource={"group": "", "version": "v1", "resource": "configmaps"},
        kind="ConfigMap",
        namespace="payments",
    )
    answer = post(webhook, json.dumps(other).encode())[1]["response"]
    assert answer == {"uid": "req-uid-1", "allowed": True}


def test_oversized_bodies_unknown_paths_and_health(webhook: Any) -> None:
    status, answer = post(webhook, b"", headers={"Content-Length": str(MAX_BODY + 1)})
    assert (status, answer["error"]) == (413, f"the body is larger than {MAX_BODY} bytes")
    assert post(webhook, b"{}", path="/mutate")[0] == 404
    connection = http.client.HTTPConnection(webhook[0], webhook[1], timeout=5)
    for path, expected in (("/healthz", 200), ("/readyz", 200), ("/nope", 404)):
        connection.request("GET", path)
        reply = connection.getresponse()
        reply.read()
        assert reply.status == expected, path
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    connection.close()
    # Refused before its body is read, and still an error the error-rate alert sees.
    assert 'budgetops_webhook_errors_total{code="413"} 1.0' in metrics


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    admission = admitting(SQLiteStore(tmp_path / "l.sqlite3"))
    with pytest.raises(ValueError, match=r"refusing plain HTTP on 0\.0\.0\.0"):
        serve(admission, host="0.0.0.0", port=0, tls=None)


@pytest.mark.parametrize(
    ("query", "seconds"),
    [("5s", 5.0), (None, 10.0), ("bogus", 10.0), ("1m", 60.0), ("9999999999d", 10.0)],
)
def test_the_api_servers_deadline_is_read_from_the_url(query: str | None, seconds: float) -> None:
    """The API server appends `?timeout=5s` to the webhook URL; anything else means 10 s."""
    from budgetops.admission.server import _timeout

    assert _timeout(query) == seconds


class OutOfTime(MemStore):
    """The store's own deadline passing, as a busy in-cluster budget would make it: its
    `update_status_async` (public) answers ChargeTimeout."""

    async def update_status_async(self, *args: Any, **kwargs: Any) -> Any:
        raise ChargeTimeout("slow")


def test_a_charge_out_of_time_is_a_retriable_denial() -> None:
    store = OutOfTime()
    store.apply(trust_budget(subjects={"groups": ["developers"]}))
    admission = admitting(store)
    answer = asyncio.run(admission.review(json.dumps(request()).encode(), timeout=5))
    assert answer.status == 200
    status = answer.body["response"]["status"]
    assert answer.body["response"]["allowed"] is False
    assert (status["code"], status["reason"]) == (503, "ServiceUnavailable")
    assert "Please try again" in status["message"]


def test_a_token_request_is_settled_at_once(tmp_path: Path) -> None:
    """A TokenRequest is never stored, so no watch could confirm it later."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(
        trust_budget(
            subjects={"serviceAccounts": ["ci/*"]},
            accountKey="serviceaccount:${namespace}/${name}",
            match=[{"resource": "serviceaccounts", "subresource": "token"}],
        )
    )
    admission = admitting(store)
    review = request(
        user="system:serviceaccount:ci:builder",
        resource={"group": "", "version": "v1", "resource": "serviceaccounts"},
        kind="TokenRequest",
        namespace="ci",
        obj={"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
    )
    review["request"]["subResource"] = "token"
    answer = asyncio.run(admission.review(json.dumps(review).encode()))
    assert answer.body["response"]["allowed"] is True
    account = store.get(BudgetKey("TrustBudget", "certs")).status.accounts[
        "serviceaccount:ci/builder"
    ]
    assert (account.spent, account.reserved) == (1, 0)


def test_metrics_count_decisions_by_kind_and_reason(webhook: Any) -> None:
    for uid in ("m1", "m1"):
        post(webhook, json.dumps(request(uid=uid)).encode())
    post(webhook, b"{broken")
    connection = http.client.HTTPConnection(webhook[0], webhook[1], timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    assert (
        'budgetops_admissions_total{decision="allowed",kind="TrustBudget",reason="Charged"} 1.0'
        in text
    )
    assert 'reason="AlreadyCharged"} 1.0' in text
    assert 'budgetops_webhook_errors_total{code="400"} 1.0' in text
    assert "budgetops_webhook_latency_seconds_count 3.0" in text
    assert "user:alice" not in text, "no per-account series"


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ({"expirationSeconds": 600}, 600),
        ({"duration": "1h0m0s"}, 3600),
        ({"duration": "90m"}, 5400),
        ({"duration": "2160h"}, 7_776_000),
        ({"duration": "1.5h"}, 5400),
        ({"duration": "soon"}, None),
        ({}, None),
    ],
)
def test_certificate_lifetimes_are_read_from_csrs_and_cert_manager(
    spec: dict[str, Any], seconds: int | None
) -> None:
    from budgetops.admission.classify import certificate_ttl

    ttl = certificate_ttl(parsed(obj={"metadata": {"uid": "x"}, "spec": spec}))
    assert (ttl.total_seconds() if ttl else None) == seconds


def break_glass_budget(per_day: int = 1) -> TrustBudget:
    """One point for developers; oncall may break glass `per_day` times, for at most 1h."""
    return trust_budget(
        subjects={"groups": ["developers"]},
        initialBalance=1,
        breakGlass={
            "subjects": {"groups": ["oncall"]},
            "maxCertificateTTL": "1h",
            "rateLimit": {"count": per_day, "per": "24h"},
        },
    )


def test_break_glass_through_the_webhook(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(break_glass_budget())
    admission = admitting(store)

    def csr(uid: str, *, groups: tuple[str, ...], ttl: int) -> dict[str, Any]:
        obj = {
            "metadata": {
                "name": uid,
                "uid": uid,
                "annotations": {"budgetops.dev/break-glass": "INC-7"},
            },
            "spec": {"expirationSeconds": ttl},
        }
        body = json.dumps(request(uid=uid, groups=groups, obj=obj)).encode()
        return asyncio.run(admission.review(body)).body["response"]

    assert csr("normal", groups=("developers",), ttl=600)["allowed"], "charged as usual"
    refused = csr("dev", groups=("developers",), ttl=600)
    assert "alice is not among this budget's break-glass subjects" in refused["status"]["message"]
    long = csr("long", groups=("developers", "oncall"), ttl=86400)
    assert "the certificate lifetime 86400s exceeds 3600s" in long["status"]["message"]
    passed = csr("short", groups=("developers", "oncall"), ttl=900)
    assert passed["allowed"]
    assert passed["warnings"] == ["Break-glass used by alice for user:alice: INC-7"]
    assert not csr("again", groups=("developers", "oncall"), ttl=900)["allowed"]
    budget = store.get(BudgetKey("TrustBudget", "certs"))
    assert [u.object for u in budget.status.break_glass_uses] == ["CertificateSigningRequest/short"]


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    import os
    import shutil
    import ssl
    import time

    from tests.tls import loopback_server_pair

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first_ca, serving = loopback_server_pair(tmp_path / "first")
    second_ca, rotated = loopback_server_pair(tmp_path / "second")
    admission = admitting(SQLiteStore(tmp_path / "l.sqlite3"))
    server = serve(
        admission,
        host="127.0.0.1",
        port=0,
        tls=(str(serving.cert), str(serving.key)),
        tls_check_seconds=0.05,
    )
    port = server.port

    def handshake(ca: Path) -> bool:
        context = ssl.create_default_context(cafile=str(ca))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                return True
        except ssl.SSLCertVerificationError:
            return False

    try:
        assert handshake(first_ca.cert)
        shutil.copy(rotated.key, serving.key)
        shutil.copy(rotated.cert, serving.cert)
        later = time.time() + 5
        os.utime(serving.cert, (later, later))
        os.utime(serving.key, (later, later))
        deadline = time.monotonic() + 5
        while not handshake(second_ca.cert) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handshake(second_ca.cert), "new connections get the rotated certificate"
        assert not handshake(first_ca.cert)
    finally:
        server.close()


CERTIFICATE_REQUESTS = {
    "group": "cert-manager.io",
    "version": "v1",
    "resource": "certificaterequests",
}
CERT_MANAGER = "system:serviceaccount:cert-manager:cert-manager"


@pytest.mark.parametrize(
    ("template", "annotations", "subjects", "expected"),
    [
        (
            "user:${username}",
            {"budgetops.dev/requester": "alice"},
            {"users": ["alice"]},
            ["user:alice"],
        ),
        (
            "namespace:${namespace}",
            {},
            {"serviceAccounts": ["cert-manager/*"]},
            ["namespace:payments"],
        ),
        ("user:${username}", {}, {"users": ["alice"]}, []),
        ("user:${username}", {"budgetops.dev/requester": "mallory"}, {"users": ["alice"]}, []),
    ],
)
def test_cert_manager_requests_follow_the_requester_or_the_namespace(
    template: str, annotations: dict[str, str], subjects: dict[str, Any], expected: list[str]
) -> None:
    budget = trust_budget(
        subjects=subjects,
        accountKey=template,
        match=[{"group": "cert-manager.io", "resource": "certificaterequests"}],
    )
    review = parsed(
        user=CERT_MANAGER,
        groups=("system:serviceaccounts",),
        resource=CERTIFICATE_REQUESTS,
        kind="CertificateRequest",
        namespace="payments",
        obj={
            "metadata": {
                "name": "web-1",
                "uid": "cr-1",
                "annotations": annotations,
                "namespace": "payments",
            }
        },
    )
    charged = classify([budget], review, Identity()).trust
    assert [c.account for c in charged] == expected


def test_only_the_configured_controllers_may_name_a_requester() -> None:
    budget = trust_budget(
        subjects={"users": ["alice"]},
        match=[{"group": "cert-manager.io", "resource": "certificaterequests"}],
    )
    review = parsed(
        user="mallory",
        resource=CERTIFICATE_REQUESTS,
        kind="CertificateRequest",
        namespace="payments",
        obj={"metadata": {"uid": "cr-2", "annotations": {"budgetops.dev/requester": "alice"}}},
    )
    assert classify([budget], review, Identity()).trust == [], "mallory cannot bill alice"


def test_a_client_that_hangs_up_mid_request_is_no_error(
    webhook: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A caller gone before its answer (a timed-out API server, a load generator stopping)
    leaves no error in the log, and the server goes on answering."""
    with socket.create_connection(webhook[:2], timeout=5) as hung:
        hung.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
    with socket.create_connection(webhook[:2], timeout=5) as gone:
        gone.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    status, answer = post(webhook, json.dumps(request(uid="after")).encode())
    assert (status, answer["response"]["allowed"]) == (200, True)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_port_in_use_is_an_error_and_leaves_no_thread_behind(webhook: Any) -> None:
    admission = admitting(webhook[2])
    with pytest.raises(OSError, match="address already in use"):
        serve(admission, host="127.0.0.1", port=webhook[1], tls=None)
    assert [t.name for t in threading.enumerate()].count("webhook") == 1, "only the fixture's"


def test_closing_a_server_twice_is_harmless(tmp_path: Path) -> None:
    admission = admitting(SQLiteStore(tmp_path / "l.sqlite3"))
    server = serve(admission, host="127.0.0.1", port=0, tls=None)
    server.close()
    server.close()
    assert "webhook" not in [t.name for t in threading.enumerate()]


def test_break_glass_is_never_granted_to_a_name_a_certificate_claims(tmp_path: Path) -> None:
    """Whoever writes a Certificate writes the requester annotation cert-manager copies onto
    its CertificateRequest: before, naming a break-glass subject there passed an exhausted
    budget in their name."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    store.apply(
        trust_budget(
            subjects={"users": ["ann"]},
            initialBalance=1,
            match=[{"group": "cert-manager.io", "resource": "certificaterequests"}],
            breakGlass={
                "subjects": {"users": ["ann"]},
                "maxCertificateTTL": "1h",
                "rateLimit": {"count": 5, "per": "24h"},
            },
        )
    )
    admission = admitting(store)

    def request_as_ann(uid: str, break_glass: bool) -> dict[str, Any]:
        annotations = {"budgetops.dev/requester": "ann"}
        if break_glass:
            annotations["budgetops.dev/break-glass"] = "INC-9"
        body = request(
            user=CERT_MANAGER,
            groups=("system:serviceaccounts",),
            resource=CERTIFICATE_REQUESTS,
            kind="CertificateRequest",
            namespace="payments",
            uid=uid,
            obj={
                "metadata": {"name": uid, "uid": uid, "annotations": annotations},
                "spec": {"duration": "30m"},
            },
        )
        return asyncio.run(admission.review(json.dumps(body).encode())).body["response"]

    assert request_as_ann("first", break_glass=False)["allowed"], "ann is billed as usual"
    refused = request_as_ann("claimed", break_glass=True)
    assert not refused["allowed"]
    assert (
        "Break-glass refused: it was asked through cert-manager in ann's name"
        in (refused["status"]["message"])
    )
