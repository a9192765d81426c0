"""The webhook server's limits: slow and stalled callers, descriptor floods, encodings, and
/metrics off the admission loop."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from budgetops.admission.classify import Identity
from budgetops.admission.server import Limits, WebhookServer, serve
from budgetops.admission.webhook import Admission
from budgetops.store.sqlite import SQLiteStore
from tests.unit.test_admission import request

NOW = datetime(2026, 1, 1, 15, 30, tzinfo=UTC)
FAST = Limits(header_timeout=0.3, body_timeout=0.3, keepalive_timeout=5.0)
JSON = {"Content-Type": "application/json"}


def admitting(path: Path) -> Admission:
    store = SQLiteStore(path / "ledger.sqlite3")
    return Admission(store, clock=lambda: NOW, identity=Identity(), ttl=timedelta(minutes=5))


@pytest.fixture
def admission(tmp_path: Path) -> Admission:
    return admitting(tmp_path)


@pytest.fixture
def server(admission: Admission) -> Iterator[WebhookServer]:
    running = serve(admission, host="127.0.0.1", port=0, tls=None, limits=FAST)
    yield running
    running.close()


def ask(
    port: int,
    method: str = "GET",
    *,
    path: str = "/healthz",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def raw(port: int, data: bytes, timeout: float = 3.0, whole: bool = True) -> bytes:
    """Send `data` as is; what the server answers until it closes (or its first bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
            if not whole:
                break
        return received


@pytest.mark.parametrize("encoding", ["gzip", "br", "x-nonsense"])
def test_a_compressed_body_is_a_415_not_a_500(server: WebhookServer, encoding: str) -> None:
    status, body = ask(
        server.port,
        "POST",
        path="/validate",
        body=b'{"plain": true}',
        headers={"Content-Encoding": encoding, **JSON},
    )
    assert status == 415
    assert encoding in json.loads(body)["error"]


def test_a_chunked_body_or_a_bad_length_is_a_4xx(server: WebhookServer) -> None:
    chunked = raw(
        server.port,
        b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 411"), chunked
    assert b'"error"' in chunked
    for length in (b"abc", b"-1", b"1, 2"):
        answer = raw(
            server.port, b"POST /validate HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n{}"
        )
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    assert ask(server.port)[0] == 200


def test_a_slow_head_is_closed_after_the_header_timeout(server: WebhookServer) -> None:
    started = time.monotonic()
    answer = raw(server.port, b"POST /validate HTTP/1.1\r\nHost: x\r\n", timeout=5.0)
    assert answer == b""
    assert time.monotonic() - started < 2.0
    assert ask(server.port)[0] == 200


def test_a_slow_body_is_a_408_within_the_body_timeout(server: WebhookServer) -> None:
    started = time.monotonic()
    answer = raw(
        server.port,
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        5.0,
        whole=False,
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 2.0


class Blocking:
    """A collector that holds a scrape until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.entered.set()
        self.release.wait(10)
        yield GaugeMetricFamily("budgetops_test_blocking", "holds a scrape", value=1)


def test_a_slow_metrics_scrape_does_not_hold_admissions(
    admission: Admission, server: WebhookServer
) -> None:
    blocking = Blocking()
    admission.metrics.registry.register(blocking)
    scraped: list[tuple[int, bytes]] = []
    scrape = threading.Thread(target=lambda: scraped.append(ask(server.port, path="/metrics")))
    scrape.start()
    try:
        assert blocking.entered.wait(5)
        started = time.monotonic()
        status, _ = ask(
            server.port, "POST", path="/validate", body=b"{}", headers=JSON, timeout=2.0
        )
        assert status == 400  # answered by the review, while the scrape is still held
        assert ask(server.port, timeout=2.0)[0] == 200
        assert time.monotonic() - started < 1.0
    finally:
        blocking.release.set()
        scrape.join(10)
    assert scraped[0][0] == 200
    assert b"budgetops_test_blocking" in scraped[0][1]


CHILD = """
import logging, resource, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from budgetops.admission.classify import Identity
from budgetops.admission.server import Limits, serve
from budgetops.admission.webhook import Admission
from budgetops.store.sqlite import SQLiteStore

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
store = SQLiteStore(Path(sys.argv[1]) / "ledger.sqlite3")
now = datetime(2026, 1, 1, tzinfo=UTC)
admission = Admission(store, clock=lambda: now, identity=Identity(), ttl=timedelta(minutes=5))
limits = Limits(header_timeout=60, keepalive_timeout=60, flood_log_seconds=60)
server = serve(admission, host="127.0.0.1", port=0, tls=None, limits=limits)
print(server.port, flush=True)
sys.stdin.read()
server.close()
"""


@contextlib.contextmanager
def child_server(tmp_path: Path, descriptors: int) -> Iterator[tuple[int, list[str]]]:
    """The webhook in a child process whose open-file limit is `descriptors`: yields its port
    and a list that holds its log once the block is left (the child is killed if it hangs)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(descriptors)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    try:
        assert child.stdout is not None
        yield int(child.stdout.readline()), log
    finally:
        try:
            log.append(child.communicate("", timeout=20)[1])
        finally:
            child.kill()


def test_stalled_connections_past_the_descriptor_limit_leave_requests_answered(
    tmp_path: Path,
) -> None:
    """300 stalled connections against a server limited to 256 descriptors: the oldest idle
    are shed, a normal request is answered at once, and the log stays a few lines."""
    stalled: list[socket.socket] = []
    with child_server(tmp_path, 256) as (port, logged):
        try:
            for n in range(300):
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                if n % 2:
                    connection.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\n")  # stalled
                stalled.append(connection)
            started = time.monotonic()
            assert ask(port, timeout=5.0)[0] == 200
            status, _ = ask(port, "POST", path="/validate", body=b"{}", headers=JSON, timeout=5.0)
            assert status == 400
            assert time.monotonic() - started < 4.0  # asyncio retries a failed accept() after 1 s
        finally:
            for connection in stalled:
                connection.close()
    log = logged[0]
    lines = [line for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log, log
    assert len(lines) <= 5, log
    assert any("shed idle connections" in line for line in lines), log


def review_with(raw_value: str, uid: str = "req-1") -> bytes:
    """An AdmissionReview whose object holds `raw_value` written as is (no Python value)."""
    body = request(uid=uid)
    body["request"]["uid"] = uid
    body["request"]["object"]["spec"] = "@@"
    return json.dumps(body).replace('"@@"', raw_value).encode()


def errors_counted(port: int, code: str) -> float:
    text = ask(port, path="/metrics")[1].decode()
    found = re.search(rf'^budgetops_webhook_errors_total{{code="{code}"}} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


@pytest.mark.parametrize(
    ("raw_value", "says"),
    [
        ("1" * 4301, "a number written with 4301 characters"),
        ("-" + "9" * 100_000, "a number written with 100001 characters"),
        ("1e400", "1e400, a number out of range"),
        ("NaN", "NaN is not a number JSON allows"),
        ("[" * 150 + "]" * 150, "nests more than 100 levels deep"),
    ],
)
def test_a_body_past_the_json_bounds_is_denied_by_its_uid_logged_and_counted(
    server: WebhookServer, raw_value: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, an integer of 4,301 digits anywhere in a review was aiohttp's plain 500,
    neither logged nor counted. The API server takes a non-200 for a failed webhook, so a
    review whose uid can be read is denied by it."""
    with caplog.at_level("WARNING", logger="budgetops.webhook"):
        status, body = ask(
            server.port, "POST", path="/validate", body=review_with(raw_value), headers=JSON
        )
    assert status == 200, body
    answer = json.loads(body)["response"]
    assert (answer["uid"], answer["allowed"], answer["status"]["code"]) == ("req-1", False, 400)
    assert says in answer["status"]["message"]
    assert any(says in r.getMessage() and "req-1" in r.getMessage() for r in caplog.records)
    assert errors_counted(server.port, "400") == 1
    assert ask(server.port, "POST", path="/validate", body=review_with("1"), headers=JSON)[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"apiVersion": "admission.k8s.io/v1", "request": {"uid": 7}, "n": ' + b"1" * 5000 + b"}",
        b"[" + b"1" * 5000 + b"]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"request": {"uid": "x"}, "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_a_body_past_the_json_bounds_without_a_uid_is_a_400_logged_and_counted(
    server: WebhookServer, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="budgetops.webhook"):
        status, answer = ask(server.port, "POST", path="/validate", body=body, headers=JSON)
    assert status == 400, answer
    assert json.loads(answer)["error"].startswith("the body ")
    assert caplog.records, "logged"
    assert errors_counted(server.port, "400") == 1


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_sent_as_json_is_a_415_counted(
    server: WebhookServer, content_type: str | None
) -> None:
    """Before, /validate read any Content-Type as an AdmissionReview."""
    headers = {"Content-Type": content_type} if content_type else {}
    status, body = ask(
        server.port, "POST", path="/validate", body=review_with("1"), headers=headers
    )
    assert status == 415, body
    assert "Content-Type: application/json" in json.loads(body)["error"]
    assert errors_counted(server.port, "415") == 1
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert ask(server.port, "POST", path="/validate", body=b"{}", headers=with_charset)[0] == 400


def test_a_burst_of_connections_past_the_descriptor_limit_never_runs_out_of_them(
    tmp_path: Path,
) -> None:
    """Before, asyncio accepted 256 connections per turn before the cap saw any: accept()
    ran out of descriptors and stopped for a second each time, and an admission behind a
    burst of 1,100 connections against 1,024 descriptors waited 1 to 2 s."""
    held: list[socket.socket] = []
    with child_server(tmp_path, 512) as (port, logged):
        try:
            for _ in range(700):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            status, _ = ask(port, "POST", path="/validate", body=b"{}", headers=JSON, timeout=10.0)
            assert status == 400  # answered by the review
        finally:
            for connection in held:
                connection.close()
    log = logged[0]
    assert "accept() failed" not in log, log
    assert "shed idle connections" in log, log


def test_a_connection_past_the_cap_with_none_idle_is_told_503(admission: Admission) -> None:
    busy = serve(admission, host="127.0.0.1", port=0, tls=None, limits=Limits(max_connections=1))
    blocking = Blocking()
    admission.metrics.registry.register(blocking)
    scrape = threading.Thread(target=lambda: ask(busy.port, path="/metrics"))
    scrape.start()
    try:
        assert blocking.entered.wait(5)
        answer = raw(busy.port, b"")  # told at once, before it sends anything
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"Retry-After: 1\r\n" in answer
    finally:
        blocking.release.set()
        scrape.join(10)
        busy.close()
