"""kubectl -> the real API server -> BudgetOps' webhook (embedded store) -> a calm denial.

The in-cluster store comes with the rest of the admission work; this proves the webhook,
classification and the ledger end to end through a real API server's admission chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.resources import BudgetKey, RiskBudget, TrustBudget
from budgetops.engine.clock import system_clock
from budgetops.store.sqlite import SQLiteStore
from tests.cluster.conftest import CSR_CREATE, DEPLOYMENT_WRITES, webhook_configuration
from tests.cluster.test_webhook_roundtrip import csr_manifest, deployment_manifest
from tests.tls import loopback_server_pair

NAME = "budgetops-embedded-test"


@pytest.fixture(scope="module")
def ledger(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    folder: Path = tmp_path_factory.mktemp("embedded")
    store = SQLiteStore(folder / "ledger.sqlite3")
    store.apply(
        TrustBudget.model_validate(
            {
                "metadata": {"name": "admin-certificates"},
                "spec": {
                    "subjects": {"users": ["admin"]},
                    "match": [
                        {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                    ],
                    "initialBalance": 3,
                    "resetInterval": "24h",
                },
            }
        )
    )
    store.apply(
        RiskBudget.model_validate(
            {
                "metadata": {"name": "roundtrip", "namespace": "default"},
                "spec": {
                    "serviceId": "roundtrip",
                    "allocation": 30,
                    "selector": {"matchLabels": {"budgetops.dev/test": "embedded"}},
                },
            }
        )
    )
    ca, serving = loopback_server_pair(folder)
    admission = Admission(store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    server = serve(admission, host="127.0.0.1", port=0, tls=(str(serving.cert), str(serving.key)))
    configuration = webhook_configuration(
        NAME,
        port=server.port,
        ca=ca.cert.read_bytes(),
        rules=[CSR_CREATE, DEPLOYMENT_WRITES],
    )
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    yield store
    control_plane.kubectl("delete", "validatingwebhookconfiguration", NAME)
    server.close()


def test_issuance_is_charged_once_and_the_fourth_is_denied(
    control_plane: Any, ledger: SQLiteStore
) -> None:
    dry = control_plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=csr_manifest("embedded-dry")
    )
    assert "(dry run, not charged)" in dry.stderr
    for n in range(3):
        made = control_plane.kubectl("create", "-f", "-", input=csr_manifest(f"embedded-{n}"))
        assert f"remaining {2 - n} of 3" in made.stderr, made.stderr
    denied = control_plane.kubectl(
        "create", "-f", "-", input=csr_manifest("embedded-3"), check=False
    )
    assert denied.returncode != 0
    assert "Trust budget exhausted. This request requires 1 points; 0 remain." in denied.stderr
    assert control_plane.kubectl("get", "csr", "embedded-3", check=False).returncode != 0
    budget = ledger.get(BudgetKey("TrustBudget", "admin-certificates"))
    assert isinstance(budget, TrustBudget)
    account = budget.status.accounts["user:admin"]
    uids = {
        json.loads(control_plane.kubectl("get", "csr", f"embedded-{n}", "-o", "json").stdout)[
            "metadata"
        ]["uid"]
        for n in range(3)
    }
    assert set(account.reservations) == uids, "reserved under the uids the objects really got"
    assert (account.reserved, account.balance) == (3, 0)


def test_a_release_is_charged_once_and_scaling_costs_nothing(
    control_plane: Any, ledger: SQLiteStore
) -> None:
    manifest = yaml.safe_load(deployment_manifest("embedded-app"))
    manifest["metadata"]["labels"] = {"budgetops.dev/test": "embedded"}
    made = control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert "Risk budget roundtrip: 25 RP (standard)" in made.stderr, made.stderr
    control_plane.kubectl(
        "patch", "deployment", "embedded-app", "--type=merge", "-p", '{"spec": {"replicas": 4}}'
    )
    control_plane.kubectl("scale", "deployment", "embedded-app", "--replicas=2")
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "example/app:2"
    frozen = control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert frozen.returncode != 0, "25 of 30 is Red: a standard release is frozen"
    assert "Risk budget roundtrip is Red: 25 / 30 RP (83.3%)" in frozen.stderr
    budget = ledger.get(BudgetKey("RiskBudget", "roundtrip", "default"))
    assert isinstance(budget, RiskBudget)
    assert budget.status.consumed == 25
