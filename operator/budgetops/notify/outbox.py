"""The outbox: notices queued by the reconciler, sent later by one thread, debounced and retried.

Reconciliation must never wait on a chat service or a mail server, so `Notifier.submit` only
queues. Per (namespace, budget, channel) lane the first notice goes out at once; what follows
within the budget's aggregation window waits and goes out as one message when the window since
the last delivery ends, so a flapping band is one message, not ten. A failed send is retried
with jittered exponential backoff, then given up and counted. Everything is held in memory.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter

from budgetops.apis.notifications import Channel, Notifications
from budgetops.engine.clock import Clock
from budgetops.engine.notices import Notice
from budgetops.notify.render import Batch
from budgetops.notify.targets import DeliveryError, TargetError, deliver

log = logging.getLogger("budgetops.notify")


class SecretSource(Protocol):
    def read(self, namespace: str, name: str, key: str) -> str:
        """The value under `key` in Secret `namespace/name`, read at each send (so rotation
        needs no restart). Raises LookupError when either is missing; the error names the
        Secret and key, never the value."""
        ...


class NotificationMetrics:
    """Delivery counters, labelled by channel type only: budgets and URLs would be unbounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "budgetops_notifications_delivered",
            "Notification messages a channel accepted.",
            ["channel_type"],
            registry=registry,
        )
        self.failures = Counter(
            "budgetops_notification_failures",
            "Failed delivery attempts (each retry counts).",
            ["channel_type"],
            registry=registry,
        )
        self.dropped = Counter(
            "budgetops_notifications_dropped",
            "Notices never delivered: pushed out of a full queue, or given up after retries.",
            ["channel_type"],
            registry=registry,
        )


class _Lane(NamedTuple):
    """Debounce and retry are per channel of a budget; the namespace is where its Secret is."""

    namespace: str
    budget: str
    channel: str


@dataclass
class _Queue:
    channel: Channel
    window: timedelta
    not_before: datetime
    """When held notices may go: at once for a new lane, else a window after the last delivery."""
    pending: deque[Notice] = field(default_factory=deque)
    dropped: int = 0
    sending: Batch | None = None
    """The batch being sent or retried; notices arriving meanwhile wait in `pending`."""
    attempts: int = 0
    retry_at: datetime | None = None

    def due(self) -> datetime | None:
        if self.sending is not None:
            return self.retry_at
        return self.not_before if self.pending else None


class Notifier:
    """Queues notices per channel and delivers them from one background thread."""

    def __init__(
        self,
        *,
        secrets: SecretSource,
        registry: CollectorRegistry,
        clock: Clock,
        retry_base: timedelta = timedelta(seconds=5),
        retry_cap: timedelta = timedelta(minutes=5),
        max_attempts: int = 8,
        max_pending: int = 100,
        timeout: float = 10.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.secrets = secrets
        self.metrics = NotificationMetrics(registry)
        self.clock = clock
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        self.max_pending = max_pending
        self.timeout = timeout
        self.jitter = jitter
        self._queues: dict[_Lane, _Queue] = {}
        self._lock = threading.Lock()
        self._delivering = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(
        self, *, secret_namespace: str, notifications: Notifications, notices: Sequence[Notice]
    ) -> None:
        """Queue `notices` for every channel; holds a lock only for in-memory bookkeeping."""
        now = self.clock()
        with self._lock:
            for channel in notifications.channels:
                for notice in notices:
                    lane = _Lane(secret_namespace, notice.budget, channel.name)
                    queue = self._queues.setdefault(
                        lane, _Queue(channel, notifications.aggregation_window, not_before=now)
                    )
                    queue.channel, queue.window = channel, notifications.aggregation_window
                    if len(queue.pending) >= self.max_pending:
                        queue.pending.popleft()
                        queue.dropped += 1
                        self.metrics.dropped.labels(channel.type).inc()
                    queue.pending.append(notice)
        self._wake.set()

    def deliver_due(self, now: datetime) -> datetime | None:
        """Send every message due at `now`; returns when the next one is due (None: nothing).

        The delivery thread calls this; tests call it directly with the time they choose.
        """
        with self._delivering:
            for lane, channel, batch in self._claim(now):
                failure = self._attempt(lane, channel, batch)
                # a send may take its whole timeout: windows and retries count from its end
                self._settle(lane, channel, batch, failure, max(now, self.clock()))
            with self._lock:
                return min(filter(None, (q.due() for q in self._queues.values())), default=None)

    def _claim(self, now: datetime) -> list[tuple[_Lane, Channel, Batch]]:
        """The lanes due at `now`, each with the batch it sends; idle lanes are forgotten."""
        claimed = []
        with self._lock:
            for lane, queue in list(self._queues.items()):
                due = queue.due()
                if queue.sending is None and not queue.pending and queue.not_before <= now:
                    del self._queues[lane]
                elif due is not None and due <= now:
                    if queue.sending is None:
                        queue.sending = Batch(lane.budget, tuple(queue.pending), queue.dropped)
                        queue.pending.clear()
                        queue.dropped = 0
                    claimed.append((lane, queue.channel, queue.sending))
        return claimed

    def _attempt(self, lane: _Lane, channel: Channel, batch: Batch) -> str | None:
        """One send; returns why it failed, in words that never contain the Secret's value."""
        ref = channel.secret_ref
        try:
            value = self.secrets.read(lane.namespace, ref.name, ref.key)
            deliver(channel, value, batch, timeout=self.timeout)
        except (LookupError, TargetError, DeliveryError) as error:
            return str(error)
        except Exception as error:  # anything else may quote what it failed on: name it only
            return type(error).__name__
        return None

    def _settle(
        self, lane: _Lane, channel: Channel, batch: Batch, failure: str | None, now: datetime
    ) -> None:
        where = f"channel {channel.name} ({channel.type}) of {lane.budget}"
        with self._lock:
            queue = self._queues[lane]
            if failure is None:
                self.metrics.delivered.labels(channel.type).inc()
                queue.sending, queue.attempts, queue.retry_at = None, 0, None
                queue.not_before = now + queue.window
                log.debug("notified %s: %d notices", where, len(batch.notices))
                return
            self.metrics.failures.labels(channel.type).inc()
            queue.attempts += 1
            if queue.attempts >= self.max_attempts:
                self.metrics.dropped.labels(channel.type).inc(len(batch.notices))
                queue.sending, queue.attempts, queue.retry_at = None, 0, None
                log.warning(
                    "gave up notifying %s after %d attempts (%s); %d notices not delivered",
                    where,
                    self.max_attempts,
                    failure,
                    len(batch.notices),
                )
                return
            delay = self.backoff(queue.attempts)
            queue.retry_at = now + delay
            log.info(
                "notifying %s failed (%s), attempt %d of %d; next try in %.0fs",
                where,
                failure,
                queue.attempts,
                self.max_attempts,
                delay.total_seconds(),
            )

    def backoff(self, attempts: int) -> timedelta:
        """Double per failed attempt up to the cap, then keep 50-100% of it at random, so many
        lanes failing together (one chat service down) do not retry in step."""
        doublings = min(attempts - 1, 30)  # past that any sane cap is reached; timedelta overflows
        ceiling = min(self.retry_cap, self.retry_base * (1 << doublings))
        return ceiling * (0.5 + self.jitter() / 2)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="budgetops-notify", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the thread after its current send; what is still held is dropped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before delivering, so a submit during it wakes the next wait
            now = self.clock()
            due = self.deliver_due(now)
            self._wake.wait(None if due is None else (due - now).total_seconds())
