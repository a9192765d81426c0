"""The handle a gateway records a provider call's real cost through."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol


class Recorder(Protocol):
    def __call__(
        self,
        cost: Decimal,
        *,
        tokens: int,
        model: str,
        provider: str,
        request_id: str | None = None,
    ) -> None: ...


class Usage:
    """What `spend` yields: record the call's actual cost once it is known.

    Nothing is charged if the block ends without `record` (the provider call failed before
    costing anything); `recorded` says whether it was.
    """

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.recorded = False

    def record(
        self,
        cost: Decimal,
        *,
        tokens: int,
        model: str,
        provider: str,
        request_id: str | None = None,
    ) -> None:
        if self.recorded:
            raise RuntimeError("this call's usage was recorded already")
        self._recorder(cost, tokens=tokens, model=model, provider=provider, request_id=request_id)
        self.recorded = True
