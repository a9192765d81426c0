"""The outbox on a fake clock, delivering to a local HTTP receiver and SMTP server: debounce
per budget and channel, retry with backoff, giving up, bounded queues, and secrets kept out
of every log line whatever goes wrong."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from budgetops.apis.notifications import Notifications
from budgetops.engine.clock import system_clock
from budgetops.engine.notices import Notice
from budgetops.notify.outbox import Notifier
from tests.ports import free_port

from .test_notify_targets import TOKEN_PATH, Receiver, smtp_server

T0 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
WINDOW = timedelta(hours=1)
BUDGET = "RiskBudget payments/checkout"
NAMESPACE = "payments"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Secrets(dict[tuple[str, str, str], str]):
    def read(self, namespace: str, name: str, key: str) -> str:
        try:
            return self[namespace, name, key]
        except KeyError:
            raise LookupError(f"secret {namespace}/{name} has no key {key}") from None


def band(to: str, *, budget: str = BUDGET) -> Notice:
    frm = "Yellow" if to == "Green" else "Green"
    return Notice(budget, "BandChanged", f"checkout: {frm} -> {to}", severity="warning")


def notifications(*channels: tuple[str, str], to: list[str] | None = None) -> Notifications:
    return Notifications.model_validate(
        {
            "aggregationWindow": "1h",
            "channels": [
                {"name": name, "type": type, "secretRef": {"name": "hooks", "key": name}}
                | ({"to": to} if to else {})
                for name, type in channels
            ],
        }
    )


WEBHOOK = notifications(("ops", "webhook"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as served:
        yield served


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def secrets(receiver: Receiver) -> Secrets:
    return Secrets({(NAMESPACE, "hooks", "ops"): receiver.url + TOKEN_PATH})


def make(secrets: Secrets, clock: Clock, **options: Any) -> tuple[Notifier, CollectorRegistry]:
    registry = CollectorRegistry()
    options = {"retry_base": timedelta(seconds=10), "jitter": lambda: 0.0, **options}
    return Notifier(secrets=secrets, registry=registry, clock=clock, timeout=2, **options), registry


def count(registry: CollectorRegistry, name: str, channel_type: str = "webhook") -> float:
    return registry.get_sample_value(f"{name}_total", {"channel_type": channel_type}) or 0.0


def summaries(receiver: Receiver) -> list[list[str]]:
    return [[n["summary"] for n in r.json()["notices"]] for r in receiver.requests]


def submit(notifier: Notifier, *notices: Notice, where: Notifications = WEBHOOK) -> None:
    notifier.submit(secret_namespace=NAMESPACE, notifications=where, notices=notices)


def run(notifier: Notifier, clock: Clock, at: timedelta) -> datetime | None:
    clock.now = T0 + at
    return notifier.deliver_due(clock.now)


def test_first_notice_goes_at_once_and_the_next_waits_for_the_window(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    notifier, registry = make(secrets, clock)
    submit(notifier, band("Yellow"))
    assert run(notifier, clock, timedelta(0)) is None
    assert summaries(receiver) == [["checkout: Green -> Yellow"]]

    clock.now = T0 + timedelta(minutes=10)
    submit(notifier, band("Red"))
    assert run(notifier, clock, timedelta(minutes=10)) == T0 + WINDOW
    assert run(notifier, clock, WINDOW - timedelta(seconds=1)) == T0 + WINDOW
    assert len(receiver.requests) == 1
    assert run(notifier, clock, WINDOW) is None
    assert summaries(receiver) == [["checkout: Green -> Yellow"], ["checkout: Green -> Red"]]
    assert count(registry, "budgetops_notifications_delivered") == 2


def test_the_window_counts_from_when_a_slow_send_ended(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    class Slow(Secrets):
        def read(self, namespace: str, name: str, key: str) -> str:
            clock.now += timedelta(seconds=30)  # the send takes 30 s
            return super().read(namespace, name, key)

    notifier, _ = make(Slow(secrets), clock)
    submit(notifier, band("Yellow"))
    assert run(notifier, clock, timedelta(0)) is None
    submit(notifier, band("Red"))
    due = notifier.deliver_due(clock.now)
    assert due == T0 + timedelta(seconds=30) + WINDOW, "not from when the send began"


def test_a_flapping_band_is_one_message_with_every_transition(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    notifier, _ = make(secrets, clock)
    submit(notifier, band("Yellow"))
    run(notifier, clock, timedelta(0))
    for minutes, to in ((5, "Green"), (6, "Yellow"), (20, "Green"), (21, "Yellow")):
        clock.now = T0 + timedelta(minutes=minutes)
        submit(notifier, band(to))
        run(notifier, clock, timedelta(minutes=minutes))
    assert len(receiver.requests) == 1
    run(notifier, clock, WINDOW)
    assert summaries(receiver)[1:] == [
        [
            "checkout: Yellow -> Green",
            "checkout: Green -> Yellow",
            "checkout: Yellow -> Green",
            "checkout: Green -> Yellow",
        ]
    ]
    assert receiver.requests[1].json()["budget"] == BUDGET


def test_budgets_and_channels_are_debounced_apart(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    secrets[NAMESPACE, "hooks", "chat"] = receiver.url + "/chat"
    two = notifications(("ops", "webhook"), ("chat", "slack"))
    notifier, registry = make(secrets, clock)
    submit(notifier, band("Yellow"), band("Red", budget="RiskBudget payments/ledger"), where=two)
    run(notifier, clock, timedelta(0))
    assert sorted(r.path for r in receiver.requests) == [*["/chat"] * 2, *[TOKEN_PATH] * 2]
    assert count(registry, "budgetops_notifications_delivered", "slack") == 2


def test_a_failed_send_is_retried_with_backoff_until_it_is_delivered(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    receiver.answer(500, 500)
    notifier, registry = make(secrets, clock)
    submit(notifier, band("Yellow"))
    assert run(notifier, clock, timedelta(0)) == T0 + timedelta(seconds=5)
    assert run(notifier, clock, timedelta(seconds=4)) == T0 + timedelta(seconds=5)
    assert run(notifier, clock, timedelta(seconds=5)) == T0 + timedelta(seconds=15)
    clock.now = T0 + timedelta(seconds=10)
    submit(notifier, band("Red"))  # waits for the window; the retried batch is not widened
    assert run(notifier, clock, timedelta(seconds=15)) == T0 + timedelta(seconds=15) + WINDOW
    assert summaries(receiver) == [["checkout: Green -> Yellow"]] * 3
    assert count(registry, "budgetops_notification_failures") == 2
    assert count(registry, "budgetops_notifications_delivered") == 1


@pytest.mark.parametrize(
    ("attempts", "jitter", "seconds"),
    [(1, 0.0, 5), (1, 1.0, 10), (2, 0.0, 10), (4, 1.0, 80), (6, 1.0, 300), (90, 0.5, 225)],
)
def test_backoff_doubles_up_to_the_cap_and_keeps_half_or_more(
    attempts: int, jitter: float, seconds: float
) -> None:
    notifier = Notifier(
        secrets=Secrets(),
        registry=CollectorRegistry(),
        clock=Clock(),
        retry_base=timedelta(seconds=10),
        retry_cap=timedelta(minutes=5),
        jitter=lambda: jitter,
    )
    assert notifier.backoff(attempts) == timedelta(seconds=seconds)


def test_after_the_last_attempt_the_batch_is_given_up_and_counted(
    receiver: Receiver, secrets: Secrets, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer(500, 500, 500)
    notifier, registry = make(secrets, clock, max_attempts=3)
    submit(notifier, band("Yellow"), band("Red"))
    assert run(notifier, clock, timedelta(0)) is not None
    assert run(notifier, clock, timedelta(minutes=1)) is not None
    assert run(notifier, clock, timedelta(minutes=2)) is None
    assert len(receiver.requests) == 3
    assert count(registry, "budgetops_notification_failures") == 3
    assert count(registry, "budgetops_notifications_dropped") == 2
    assert count(registry, "budgetops_notifications_delivered") == 0
    [gave_up] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert gave_up.getMessage() == (
        f"gave up notifying channel ops (webhook) of {BUDGET} after 3 attempts (HTTP 500); "
        "2 notices not delivered"
    )


def test_a_missing_secret_is_a_failed_attempt_and_read_again_on_retry(
    receiver: Receiver, clock: Clock
) -> None:
    secrets = Secrets()
    notifier, registry = make(secrets, clock)
    submit(notifier, band("Yellow"))
    retry = run(notifier, clock, timedelta(0))
    assert count(registry, "budgetops_notification_failures") == 1
    secrets[NAMESPACE, "hooks", "ops"] = receiver.url + TOKEN_PATH
    assert retry is not None
    run(notifier, clock, retry - T0)
    assert summaries(receiver) == [["checkout: Green -> Yellow"]]


def test_a_full_queue_drops_the_oldest_and_says_so(
    receiver: Receiver, secrets: Secrets, clock: Clock
) -> None:
    notifier, registry = make(secrets, clock, max_pending=3)
    submit(notifier, band("Yellow"))
    run(notifier, clock, timedelta(0))
    submit(notifier, *(band(to) for to in ("Green", "Yellow", "Green", "Yellow", "Red")))
    run(notifier, clock, WINDOW)
    held = receiver.requests[1].json()
    assert [n["summary"] for n in held["notices"]] == [
        "checkout: Yellow -> Green",
        "checkout: Green -> Yellow",
        "checkout: Green -> Red",
    ]
    assert held["dropped"] == 2
    assert "2 older notices were dropped" in held["text"]
    assert count(registry, "budgetops_notifications_dropped") == 2


@pytest.fixture(params=["http-500", "refused", "malformed", "smtp-login"])
def failing(request: pytest.FixtureRequest, receiver: Receiver) -> Iterator[tuple[str, str]]:
    """A channel type and its secret URL, with a password and a token path, that cannot deliver."""
    if request.param == "smtp-login":
        with smtp_server() as box:
            yield "email", box.url(password="hunter2")
        return
    receiver.answer(500, 500, 500)
    yield {
        "http-500": ("slack", f"{receiver.url}{TOKEN_PATH}?token=xoxb-hunter2"),
        "refused": ("teams", f"https://bot:hunter2@127.0.0.1:{free_port()}{TOKEN_PATH}"),
        "malformed": ("webhook", f"https://bot:hunter2@127.0.0.1:99999{TOKEN_PATH}"),
    }[request.param]


def test_no_failure_path_logs_the_secret(
    failing: tuple[str, str], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    type, url = failing
    where = notifications(("ops", type), to=["oncall@example.com"] if type == "email" else None)
    notifier, registry = make(Secrets({(NAMESPACE, "hooks", "ops"): url}), clock, max_attempts=3)
    submit(notifier, band("Yellow"), where=where)
    for minutes in range(3):
        run(notifier, clock, timedelta(minutes=minutes))
    assert count(registry, "budgetops_notification_failures", type) == 3
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # the test server's
    assert [r.levelname for r in ours if r.name == "budgetops.notify"] == [
        "INFO",
        "INFO",
        "WARNING",
    ]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    exported = generate_latest(registry).decode()
    for secret in ("hunter2", TOKEN_PATH, url):
        assert secret not in logged
        assert secret not in exported


def test_the_thread_delivers_without_holding_up_submit(
    receiver: Receiver, secrets: Secrets
) -> None:
    notifier, registry = make(secrets, system_clock)
    notifier.start()
    try:
        receiver.gate.clear()  # the receiver holds its answer: the send is in flight
        submit(notifier, band("Yellow"))
        assert receiver.received.wait(2)
        submitting = threading.Thread(target=submit, args=(notifier, band("Red")))
        submitting.start()
        submitting.join(5)
        assert not submitting.is_alive(), "submit waited for the send in flight"
        receiver.gate.set()
        deadline = time.monotonic() + 2
        while not count(registry, "budgetops_notifications_delivered"):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        notifier.stop()
    assert summaries(receiver) == [["checkout: Green -> Yellow"]]
