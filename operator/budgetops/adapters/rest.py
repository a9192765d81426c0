"""Plain JSON requests to the API server, through the kubernetes client's connection pool
and credentials but around its typed models.

The typed client validates and sanitizes every body and deserializes every answer into
model objects; for a status PUT or an Event POST that cost more CPU than the rest of the
request (profiled in docs/performance.md). Bodies here are plain JSON data, or JSON already
encoded (bytes): a hot budget's status is encoded once, by its model, not built as a dict
and encoded again. A watch is read line by line (`stream`), so that its reader decides
which lines to parse.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT = 15.0
"""Seconds a request may take, connecting and answering: a stuck connection must not hold
a writer thread (and every charge queued behind it) forever."""

REFRESH_EVERY = 10.0
"""Seconds between credential refreshes (see `refresh_credentials_at_most_every`)."""


class TooLarge(ValueError):
    """An answer longer than the caller's limit (the connection is not reused)."""


def _send(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any,
    query: Sequence[tuple[str, str]],
    media: str,
    timeout: float | tuple[float, float],
) -> urllib3.BaseHTTPResponse:
    """The response to one request, its body not read yet. `body`: JSON data, or bytes of
    JSON sent as they are. `timeout`: in all, or (to connect, to wait for each read)."""
    headers = {"Accept": media}
    if body is not None:
        headers["Content-Type"] = "application/json"
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
    method, url, headers, _, _ = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    limits = (
        urllib3.Timeout(connect=timeout[0], read=timeout[1])
        if isinstance(timeout, tuple)
        else urllib3.Timeout(total=timeout)
    )
    pool: urllib3.PoolManager = api.rest_client.pool_manager
    return pool.request(
        method, url, body=body, headers=headers, timeout=limits, preload_content=False
    )


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
    response = _send(api, method, path, body=body, query=query, media=media, timeout=timeout)
    if limit is None:
        data = response.read()
    else:
        data = response.read(limit + 1)
        if len(data) > limit:
            response.close()  # never read to its end: the connection cannot serve another
            raise TooLarge(f"the answer to {path} is longer than {limit} bytes")
    response.release_conn()
    if response.status not in accept:
        raise ApiException(
            status=response.status, reason=response.reason, body=data.decode(errors="replace")
        )
    return response.status, data


def stream(
    api: client.ApiClient,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    timeout: tuple[float, float] = (REQUEST_TIMEOUT, REQUEST_TIMEOUT),
) -> urllib3.BaseHTTPResponse:
    """A GET whose answer is read as it comes (a watch): the response, once its status is
    2xx (else ApiException). Its reader closes it."""
    response = _send(
        api, "GET", path, body=None, query=query, media="application/json", timeout=timeout
    )
    if not 200 <= response.status <= 299:
        data = response.read()
        response.release_conn()
        raise ApiException(
            status=response.status, reason=response.reason, body=data.decode(errors="replace")
        )
    return response


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
