"""A lease API on the embedded ledger, set up the way a user does it: the example budget
applied and an agent created with the CLI, served by the same server as the webhook."""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetops.adapters.secrets import FileSecrets
from budgetops.admission.classify import Identity
from budgetops.admission.server import serve
from budgetops.admission.webhook import Admission
from budgetops.apis.ledger import Account
from budgetops.apis.resources import BudgetKey, TrustBudget
from budgetops.cli.main import main
from budgetops.leaseapi.app import PREFIX, lease_app
from budgetops.store.sqlite import SQLiteStore
from budgetops.usecases.leasing import LeaseService, LeaseSettings
from tests.conftest import EXAMPLES

BUDGET = "agent-llm-spend"
PROVIDER_KEY = "sk-test-provider-key-0123456789"


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def create_agent(db: Path, *extra: str) -> tuple[str, str]:
    """(agent id, token) of a new agent of the example budget."""
    code, text = cli(
        "agent", "create", "--budget", BUDGET, "--provider", "openai", "--model", "gpt-4",
        "--provider-key-secret", "openai/api-key", "--project", "checkout", "--db", str(db),
        *extra,
    )  # fmt: skip
    assert code == 0, text
    fields = dict(line.split(": ", 1) for line in text.splitlines())
    return fields["agent"], fields["token"]


class Clock:
    """The service's clock, moved by tests."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, str]:
    """One lease API call: (status, parsed JSON with Decimal money, raw text)."""
    sent = {"Content-Type": "application/json"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent |= headers or {}
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, PREFIX + path, body=data, headers=sent)
        reply = connection.getresponse()
        text = reply.read().decode()
    finally:
        connection.close()
    return reply.status, json.loads(text, parse_float=Decimal), text


@dataclass
class LeaseApi:
    db: Path
    port: int
    store: SQLiteStore
    clock: Clock

    def call(self, method: str, path: str, body: Any = None, **how: Any) -> tuple[int, Any, str]:
        return call(self.port, method, path, body, **how)

    def budget(self) -> TrustBudget:
        budget = self.store.get(BudgetKey("TrustBudget", BUDGET))
        assert isinstance(budget, TrustBudget)
        return budget

    def account(self, agent: str) -> Account:
        return self.budget().status.accounts[agent]


@contextmanager
def lease_api(tmp_path: Path, *, ttl: timedelta = timedelta(hours=1)) -> Iterator[LeaseApi]:
    """A server over the ledger in `tmp_path`, made with the example budget if it is new."""
    db = tmp_path / "ledger.sqlite3"
    if not db.exists():
        example = str(EXAMPLES / "trustbudget-llm-spend.yaml")
        code, text = cli("apply", "-f", example, "--db", str(db))
        assert code == 0, text
    secrets = FileSecrets(db.with_name(db.name + ".secrets"))
    secrets.write("", "openai", "api-key", PROVIDER_KEY)
    store = SQLiteStore(db, group_commit=True)
    clock = Clock()
    service = LeaseService(store, secrets, clock=clock, settings=LeaseSettings(ttl=ttl))
    admission = Admission(store, clock=clock, identity=Identity(), ttl=timedelta(minutes=5))
    server = serve(
        admission, host="127.0.0.1", port=0, tls=None, mounted={PREFIX: lease_app(service)}
    )
    try:
        yield LeaseApi(db, server.port, store, clock)
    finally:
        server.close()
        store.close()


def handshake(api: LeaseApi, token: str, amount: float | str = 10) -> tuple[int, Any, str]:
    return api.call(
        "POST",
        "/auth/handshake",
        {"ic_token": token, "requested_budget": amount, "runtime_version": "0.1.0"},
    )
