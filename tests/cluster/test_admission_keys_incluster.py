"""kubectl -> the real API server -> BudgetOps' webhook: what a replay is, and who pays.

A copied release id is refused, not admitted free; a requester in two governed groups is
charged in both, all or nothing. Requests go through the API server's own admission chain,
with the uids and names it really assigns.
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

NAME = "budgetops-keys-test"
LABEL = {"budgetops.dev/test": "keys"}
TEAMS = BudgetKey("TrustBudget", "team-certificates")
SERVICE = BudgetKey("RiskBudget", "keys", "default")


@pytest.fixture(scope="module")
def ledger(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    folder: Path = tmp_path_factory.mktemp("keys")
    store = SQLiteStore(folder / "ledger.sqlite3")
    store.apply(
        TrustBudget.model_validate(
            {
                "metadata": {"name": "team-certificates"},
                "spec": {
                    "subjects": {"groups": ["developers", "ops"]},
                    "accountKey": "group:${group}",
                    "match": [
                        {"group": "certificates.k8s.io", "resource": "certificatesigningrequests"}
                    ],
                    "initialBalance": 2,
                    "resetInterval": "24h",
                },
            }
        )
    )
    store.apply(
        RiskBudget.model_validate(
            {
                "metadata": {"name": "keys", "namespace": "default"},
                "spec": {"serviceId": "keys", "allocation": 30, "selector": {"matchLabels": LABEL}},
            }
        )
    )
    ca, serving = loopback_server_pair(folder)
    admission = Admission(store, clock=system_clock, identity=Identity(), ttl=timedelta(minutes=5))
    server = serve(admission, host="127.0.0.1", port=0, tls=(str(serving.cert), str(serving.key)))
    configuration = webhook_configuration(
        NAME, port=server.port, ca=ca.cert.read_bytes(), rules=[CSR_CREATE, DEPLOYMENT_WRITES]
    )
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    yield store
    control_plane.kubectl("delete", "validatingwebhookconfiguration", NAME)
    server.close()


def release(name: str, release_id: str, points: int) -> str:
    manifest = yaml.safe_load(deployment_manifest(name))
    manifest["metadata"]["labels"] = LABEL
    manifest["metadata"]["annotations"] = {
        "budgetops.dev/release-id": release_id,
        "budgetops.dev/risk-points": str(points),
    }
    return json.dumps(manifest)


def test_a_deployment_copying_a_charged_release_id_is_refused(
    control_plane: Any, ledger: SQLiteStore
) -> None:
    """Before, the copy was taken for a replay and admitted free, in Red."""
    first = control_plane.kubectl("apply", "-f", "-", input=release("keys-api", "r1", 25))
    assert "Risk budget keys: 25 RP (standard)" in first.stderr, first.stderr
    copy = control_plane.kubectl(
        "apply", "-f", "-", input=release("keys-copy", "r1", 99999), check=False
    )
    assert copy.returncode != 0, copy.stdout
    assert (
        "RiskBudget/default/keys: Release id r1 was already charged to risk budget keys in this "
        "window, for Deployment default/keys-api, pod template "
    ) in copy.stderr, copy.stderr
    assert "this is Deployment default/keys-copy" in copy.stderr
    assert control_plane.kubectl("get", "deployment", "keys-copy", check=False).returncode != 0
    again = control_plane.kubectl("apply", "-f", "-", input=release("keys-api", "r1", 25))
    assert again.returncode == 0, "re-applying the release itself changes nothing"
    budget = ledger.get(SERVICE)
    assert isinstance(budget, RiskBudget)
    assert budget.status.consumed == 25


def issue(control_plane: Any, name: str, user: str, *groups: str) -> Any:
    """Create a CSR as `user` in `groups` (and system:masters, which may create it)."""
    impersonate = [f"--as={user}", "--as-group=system:masters"]
    impersonate += [f"--as-group={group}" for group in groups]
    return control_plane.kubectl(
        "create", *impersonate, "-f", "-", input=csr_manifest(name), check=False
    )


def test_a_user_in_two_governed_groups_pays_in_both_or_not_at_all(
    control_plane: Any, ledger: SQLiteStore
) -> None:
    """Before, only the first governed group was charged."""
    made = issue(control_plane, "keys-alice-1", "alice", "developers", "ops")
    assert made.returncode == 0, made.stderr
    assert "Trust budget group:developers: cost 1, remaining 1 of 2" in made.stderr
    assert "Trust budget group:ops: cost 1, remaining 1 of 2" in made.stderr
    assert issue(control_plane, "keys-bob-1", "bob", "ops").returncode == 0
    refused = issue(control_plane, "keys-alice-2", "alice", "developers", "ops")
    assert refused.returncode != 0
    assert "TrustBudget/team-certificates: Trust budget exhausted." in refused.stderr
    budget = ledger.get(TEAMS)
    assert isinstance(budget, TrustBudget)
    uid = json.loads(control_plane.kubectl("get", "csr", "keys-alice-1", "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    developers = budget.status.accounts["group:developers"]
    assert (developers.reserved, developers.balance) == (1, 1), "the refused one taken back"
    assert all(key.startswith(f"{uid}/") for key in developers.reservations)
    assert budget.status.accounts["group:ops"].reserved == 2
