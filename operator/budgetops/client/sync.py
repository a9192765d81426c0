"""The blocking client, for runtimes without an event loop: the async client runs on a
private loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar, Unpack

from budgetops.client.config import ClientConfig, ClientOptions, Clock
from budgetops.client.runtime import BudgetClient
from budgetops.client.spending import Usage

T = TypeVar("T")


class SyncBudgetClient:
    """BudgetClient's methods, blocking. `check` reads in the calling thread, so it stays as
    cheap as the async one; everything else runs on the client's loop."""

    def __init__(
        self,
        base_url: str,
        identity_token: str,
        *,
        clock: Clock = time.time,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.client = BudgetClient(base_url, identity_token, clock=clock, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="budgetops-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncBudgetClient:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def config(self) -> ClientConfig:
        return self.client.config

    @property
    def lease_id(self) -> str | None:
        """The lease spent from now."""
        return self.client.lease_id

    @property
    def remaining(self) -> Decimal:
        """What `check` lets through: the current lease's rest, less what `spend` holds."""
        return self.client.remaining

    @property
    def conflicts(self) -> int:
        """Records refused as conflicting with one counted before (see BudgetClient)."""
        return self.client.conflicts

    @property
    def provider(self) -> str | None:
        return self.client.provider

    @property
    def max_call_cost(self) -> Decimal | None:
        """What one call may cost under the agent's budget, as the last lease said."""
        return self.client.max_call_cost

    @property
    def provider_model(self) -> str | None:
        return self.client.provider_model

    def start(self) -> None:
        self._wait(self.client.start())

    def check(self, estimated_cost: Decimal) -> None:
        self.client.check(estimated_cost)

    def reserve(self, estimated_cost: Decimal) -> None:
        self._call(lambda: self.client.reserve(estimated_cost))

    def unreserve(self, estimated_cost: Decimal) -> None:
        self._call(lambda: self.client.unreserve(estimated_cost))

    def record(
        self,
        cost: Decimal,
        *,
        tokens: int,
        model: str,
        provider: str,
        request_id: str | None = None,
    ) -> None:
        self._call(
            lambda: self.client.record(
                cost, tokens=tokens, model=model, provider=provider, request_id=request_id
            )
        )

    @contextmanager
    def spend(self, estimated_cost: Decimal) -> Iterator[Usage]:
        """As BudgetClient.spend, around a blocking provider call."""
        self.reserve(estimated_cost)
        try:
            yield Usage(self.record)
        finally:
            self.unreserve(estimated_cost)

    def provider_key(self) -> str:
        return self.client.provider_key()

    def flush(self) -> None:
        self._wait(self.client.flush())

    def close(self) -> None:
        """Close the client, then stop and close the private loop."""
        if self._loop.is_closed():
            return
        try:
            self._wait(self.client.close())
            self._wait(self._loop.shutdown_default_executor())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _call(self, function: Callable[[], T]) -> T:
        """Run a quick, non-async method on the loop, where the client's state lives."""

        async def call() -> T:
            return function()

        return self._wait(call())
