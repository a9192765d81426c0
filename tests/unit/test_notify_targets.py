"""Secret URLs parsed without ever echoing them, and real sends to a local HTTP receiver and a
local SMTP server (aiosmtpd)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from budgetops.apis.notifications import Channel
from budgetops.engine.notices import Notice
from budgetops.notify.render import Batch, slack_json, teams_json, webhook_json
from budgetops.notify.targets import (
    DeliveryError,
    SmtpTarget,
    TargetError,
    WebhookTarget,
    deliver,
    parse_target,
)
from tests.ports import free_port

BATCH = Batch(
    "RiskBudget payments/checkout",
    (
        Notice(
            "RiskBudget payments/checkout",
            "BandChanged",
            "checkout: Green -> Yellow, 80 / 200 RP (40%)",
            severity="warning",
            details=("Still allowed: standard, low-risk, security-fix, incident",),
            headline="Risk Budget at 40% for checkout",
        ),
    ),
)
TOKEN_PATH = "/services/T000/B000/xoxb-very-secret-token"
SMTP_USER, SMTP_PASSWORD = "mailer", "p@ss:w/rd"
SMTP_PASSWORD_IN_URL = "p%40ss%3Aw%2Frd"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP server that records every request and answers as scripted (200 when
    the script is empty). `gate`, when cleared, holds each answer until it is set."""

    script: deque[tuple[int, bytes]] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(Request(self.command, self.path, dict(self.headers), body))
                receiver.received.set()
                receiver.gate.wait(5)
                status, reply = receiver.script.popleft() if receiver.script else (200, b"ok")
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"{receiver.url}/elsewhere")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is not the place for request lines."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, *statuses: int) -> None:
        self.script.extend((status, b"") for status in statuses)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as served:
        yield served


@dataclass
class Mailbox:
    """What the local SMTP server accepted, and who logged in to send it."""

    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((envelope, message))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            self.logins.append(SMTP_USER)
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535

    def url(self, *, password: str = SMTP_PASSWORD_IN_URL) -> str:
        return f"smtp://{SMTP_USER}:{password}@127.0.0.1:{self.port}/?from=budgetops@example.com"


class _LoopbackController(Controller):
    """aiosmtpd's Controller probes the configured port; with port 0, probe the bound one."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """A loopback SMTP server that offers AUTH without TLS (smtplib logs in all the same)."""
    box = Mailbox()
    controller = _LoopbackController(
        box, hostname="127.0.0.1", port=0, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


def channel(type: str, **extra: Any) -> Channel:
    return Channel.model_validate(
        {"name": f"ops-{type}", "type": type, "secretRef": {"name": "n", "key": "url"}, **extra}
    )


@pytest.mark.parametrize(
    ("type", "value", "target"),
    [
        (
            "webhook",
            "https://hooks.example/x?sig=1\n",
            WebhookTarget("https://hooks.example/x?sig=1"),
        ),
        ("slack", "http://127.0.0.1:8080/hook", WebhookTarget("http://127.0.0.1:8080/hook")),
        (
            "teams",
            "https://u:p%40ss@hooks.example:8443/x",
            WebhookTarget("https://hooks.example:8443/x", authorization="Basic dTpwQHNz"),
        ),
        (
            "email",
            f"smtps://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@mail.example/?from=ops%40example.com",
            SmtpTarget(
                "mail.example", 465, "ops@example.com", SMTP_USER, SMTP_PASSWORD, implicit_tls=True
            ),
        ),
        (
            "email",
            "smtps://mail.example/?from=ops@example.com",
            SmtpTarget("mail.example", 465, "ops@example.com", implicit_tls=True),
        ),
        (
            "email",
            "smtp://u:p@mail.example:587?from=ops@example.com&starttls=TRUE",
            SmtpTarget("mail.example", 587, "ops@example.com", "u", "p", starttls=True),
        ),
    ],
)
def test_secret_urls_are_parsed(type: Any, value: str, target: Any) -> None:
    assert parse_target(type, value) == target


@pytest.mark.parametrize(
    ("type", "value"),
    [
        ("webhook", "hooks.example/s3cr3t"),
        ("slack", "ftp://hooks.example/s3cr3t"),
        ("teams", "https://hooks.example:s3cr3t/path"),
        ("email", "https://s3cr3t@mail.example/?from=a@b.c"),
        ("email", "smtp://u:s3cr3t@mail.example/"),
        ("email", "smtp://u:s3cr3t@mail.example/?from=a@b.c&s3cr3t=1"),
        ("email", "smtp://u:s3cr3t@mail.example/?from=a@b.c&from=d@e.f"),
        ("email", "smtp://s3cr3t@mail.example/?from=a@b.c"),
        ("email", "smtp://mail.example/?from=a@b.c&starttls=s3cr3t"),
        ("email", "smtps://u:s3cr3t@mail.example/?from=a@b.c&starttls=true"),
        # Credentials that would cross the network unencrypted.
        ("email", "smtp://u:s3cr3t@mail.example/?from=a@b.c"),
        ("webhook", "http://u:s3cr3t@hooks.example/x"),
    ],
)
def test_a_malformed_url_is_refused_without_quoting_it(type: Any, value: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(type, value)
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_targets_do_not_show_their_secrets_in_repr() -> None:
    assert "s3cr3t" not in repr(parse_target("slack", "https://hooks.example/s3cr3t"))
    assert "s3cr3t" not in repr(parse_target("email", "smtps://u:s3cr3t@m.example/?from=a@b.c"))


@pytest.mark.parametrize(
    ("type", "render"), [("webhook", webhook_json), ("slack", slack_json), ("teams", teams_json)]
)
def test_http_channels_post_their_json(receiver: Receiver, type: str, render: Any) -> None:
    deliver(channel(type), receiver.url + TOKEN_PATH, BATCH, timeout=2)
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", TOKEN_PATH)
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == render(BATCH)


@pytest.mark.parametrize(("status", "failure"), [(500, "HTTP 500"), (404, "HTTP 404")])
def test_an_error_status_is_a_failure(receiver: Receiver, status: int, failure: str) -> None:
    receiver.answer(status)
    with pytest.raises(DeliveryError, match=f"^{failure}$"):
        deliver(channel("webhook"), receiver.url + TOKEN_PATH, BATCH, timeout=2)


def test_a_redirect_is_a_failure_and_is_not_followed(receiver: Receiver) -> None:
    receiver.answer(302)
    with pytest.raises(DeliveryError, match=r"^HTTP 302$"):
        deliver(channel("slack"), receiver.url + TOKEN_PATH, BATCH, timeout=2)
    assert len(receiver.requests) == 1


def test_credentials_in_a_webhook_url_are_sent_as_basic_auth(receiver: Receiver) -> None:
    url = receiver.url.replace("//", "//bot:p%40ss@") + TOKEN_PATH
    deliver(channel("webhook"), url, BATCH, timeout=2)
    [request] = receiver.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:p@ss").decode()
    assert request.path == TOKEN_PATH


def test_a_refused_connection_is_a_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}{TOKEN_PATH}"
    with pytest.raises(DeliveryError, match=r"^ConnectionRefusedError$"):
        deliver(channel("teams"), url, BATCH, timeout=2)


def test_email_arrives_with_subject_body_and_recipients(mailbox: Mailbox) -> None:
    to = ["oncall@example.com", "lead@example.com"]
    deliver(channel("email", to=to), mailbox.url(), BATCH, timeout=2)
    [(envelope, message)] = mailbox.messages
    assert mailbox.logins == [SMTP_USER]
    assert envelope.mail_from == "budgetops@example.com"
    assert envelope.rcpt_tos == to
    assert message["Subject"] == "[Warning] Risk Budget at 40% for checkout"
    assert message["To"] == ", ".join(to)
    body = message.get_body()
    assert body is not None
    assert "checkout: Green -> Yellow, 80 / 200 RP (40%)" in body.get_content()
    assert "Still allowed: standard, low-risk, security-fix, incident" in body.get_content()


def test_email_without_credentials_does_not_log_in(mailbox: Mailbox) -> None:
    url = f"smtp://127.0.0.1:{mailbox.port}?from=budgetops@example.com"
    deliver(channel("email", to=["oncall@example.com"]), url, BATCH, timeout=2)
    assert len(mailbox.messages) == 1
    assert mailbox.logins == []


def test_a_refused_login_is_a_failure(mailbox: Mailbox) -> None:
    with pytest.raises(DeliveryError, match=r"^SMTP 535$"):
        deliver(
            channel("email", to=["oncall@example.com"]),
            mailbox.url(password="wrong"),
            BATCH,
            timeout=2,
        )
    assert mailbox.messages == []


def test_email_needs_recipients(mailbox: Mailbox) -> None:
    with pytest.raises(DeliveryError, match="no recipients"):
        deliver(channel("email"), mailbox.url(), BATCH, timeout=2)
