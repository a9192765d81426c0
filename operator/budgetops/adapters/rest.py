"""Plain JSON requests to the API server, through the kubernetes client's connection pool
and credentials but around its typed models.

The typed client validates and sanitizes every body and deserializes every answer into
model objects; for a status PUT or an Event POST that cost more CPU than the rest of the
request (profiled in docs/performance.md). Bodies here are already plain JSON data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT = 15.0
"""Seconds a request may take, connecting and answering: a stuck connection must not hold
a writer thread (and every charge queued behind it) forever."""

REFRESH_EVERY = 10.0
"""Seconds between credential refreshes (see `refresh_credentials_at_most_every`)."""


class TooLarge(ValueError):
    """An answer longer than the caller's limit (the connection is not reused)."""


def request_json(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: Sequence[tuple[str, str]] = (),
    accept: Sequence[int] = (200,),
    media: str = "application/json",
    timeout: float = REQUEST_TIMEOUT,
    limit: int | None = None,
) -> tuple[int, bytes]:
    """Send `body` as JSON; the status and raw answer, or ApiException if not in `accept`.
    `media` is the Accept header (a JSON form, e.g. metadata only); an answer longer than
    `limit` bytes is not read past it and raises TooLarge."""
    headers = {"Accept": media}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, _, _ = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, body, _request_timeout=timeout)
    if limit is None:
        data: bytes = response.read()  # type: ignore[no-untyped-call]
    else:
        raw = response.response
        data = raw.read(limit + 1)
        if len(data) > limit:
            raw.close()  # the rest is never read: the connection cannot serve another request
            raise TooLarge(f"the answer to {path} is longer than {limit} bytes")
        raw.release_conn()
    if response.status not in accept:
        raise ApiException(
            status=response.status, reason=response.reason, body=data.decode(errors="replace")
        )
    return response.status, data


def refresh_credentials_at_most_every(
    configuration: client.Configuration, seconds: float = REFRESH_EVERY
) -> None:
    """Let the config loader's refresh hook run at most once per `seconds`.

    Both loaders (kubeconfig and in-cluster) re-apply their whole configuration before
    every request, and setting the host re-reads the proxy settings from the environment:
    a few milliseconds of CPU per request in a pod with many service variables. Tokens
    still rotate: the in-cluster loader re-reads its token file once it is a minute old.
    """
    hook = configuration.refresh_api_key_hook
    if hook is None:
        return
    last = -float("inf")

    def refresh(current: client.Configuration) -> None:
        nonlocal last, hook
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            hook(current)
            # The kubeconfig loader installs a new hook each time it runs: keep that one,
            # behind this one.
            if current.refresh_api_key_hook is not refresh:
                hook = current.refresh_api_key_hook
                current.refresh_api_key_hook = refresh

    configuration.refresh_api_key_hook = refresh
