"""One POST to the control plane, retried while the failure may pass."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from budgetops.client.errors import InvalidToken, ProtocolError
from budgetops.client.wire import JsonObject, dumps, loads

log = logging.getLogger("budgetops.client")

HANDSHAKE = "/api/v1/auth/handshake"
REPORT = "/api/v1/budget/report"
REFRESH = "/api/v1/budget/refresh"
RELEASE = "/api/v1/budget/release"


class Transport:
    """Posts JSON, and turns the protocol's error answers into the SDK's errors."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        identity_token: str,
        *,
        retries: int,
        backoff: float,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {identity_token}"
        self._retries = retries
        self._backoff = backoff

    async def post(self, path: str, body: JsonObject, *, authorized: bool = True) -> JsonObject:
        """The answer's JSON. Raises InvalidToken on a 401, ProtocolError on any other error
        once the retries for a retryable one are spent."""
        data = dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if authorized:
            headers["Authorization"] = self._authorization
        attempt = 0
        while True:
            error = await self._attempt(path, data, headers)
            if not isinstance(error, ProtocolError):
                return error
            if not error.retryable or attempt == self._retries:
                raise error
            log.debug("%s failed (%s), retry %d of %d", path, error, attempt + 1, self._retries)
            await asyncio.sleep(self._backoff * 2**attempt)
            attempt += 1

    async def _attempt(
        self, path: str, data: bytes, headers: dict[str, str]
    ) -> JsonObject | ProtocolError:
        try:
            async with self._session.post(
                self._base_url + path, data=data, headers=headers
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            return ProtocolError("UNREACHABLE", f"{path}: {error!r}")
        try:
            answer = loads(payload)
        except ValueError:
            return ProtocolError("BAD_RESPONSE", f"{path}: HTTP {status}, not JSON", status)
        if 200 <= status < 300:
            return answer
        code, message = _error_of(answer, status)
        if status == 401:
            raise InvalidToken(f"{code}: {message}")
        return ProtocolError(code, message, status)


def _error_of(answer: JsonObject, status: int) -> tuple[str, str]:
    error = answer.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            return code, message
    return f"HTTP_{status}", "the answer carries no error code"
