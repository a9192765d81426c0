"""Where a channel's messages go, read from its Secret, and the two ways of sending them.

The Secret holds one URL. It is a credential (a webhook token in the path, an SMTP password),
so nothing here puts it, or any part of it, in a repr, an exception or a log line: errors
say what is wrong with it or how a send failed, never where it was going.
"""

from __future__ import annotations

import base64
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from ipaddress import ip_address
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from budgetops.apis.notifications import Channel, ChannelType
from budgetops.notify.render import Batch, email_message, slack_json, teams_json, webhook_json


class TargetError(ValueError):
    """The Secret does not hold a usable URL; the message never quotes it."""


class DeliveryError(Exception):
    """A send failed; the message says how (`HTTP 500`, `ConnectionRefusedError`), not where."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A webhook, Slack or Teams URL: its path is usually the token, so it is never shown.

    Credentials in the URL (`https://user:password@host/...`) become a Basic Authorization
    header: urllib would otherwise take them for part of the host name and look it up.
    """

    url: str = field(repr=False)
    authorization: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """An SMTP submission server: implicit TLS (`smtps://`), STARTTLS, or plain."""

    host: str
    port: int
    sender: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    starttls: bool = False


Target = WebhookTarget | SmtpTarget

_SMTP_PORTS = {"smtp": 25, "smtps": 465}


def parse_target(channel_type: ChannelType, value: str) -> Target:
    """Read a channel's Secret value; whitespace around it (a trailing newline) is ignored."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise TargetError(
            f"the Secret of a {channel_type} channel does not hold a valid URL"
        ) from None
    if channel_type == "email":
        return _smtp_target(parts, port)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"the Secret of a {channel_type} channel must hold an http(s) URL")
    if "@" not in parts.netloc:
        return WebhookTarget(parts.geturl())
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise TargetError(f"credentials in a {channel_type} URL need https (http only to loopback)")
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return WebhookTarget(
        parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
        authorization="Basic " + base64.b64encode(credentials.encode()).decode(),
    )


def _smtp_target(parts: SplitResult, port: int | None) -> SmtpTarget:
    if parts.scheme not in _SMTP_PORTS or not parts.hostname:
        raise TargetError("the Secret of an email channel must hold an smtp:// or smtps:// URL")
    query = parse_qs(parts.query, keep_blank_values=True)
    if not set(query) <= {"from", "starttls"} or any(len(v) > 1 for v in query.values()):
        raise TargetError("an smtp URL takes only the query parameters `from` and `starttls`, once")
    sender = query.get("from", [""])[0]
    if "@" not in sender:
        raise TargetError("an smtp URL needs the sender address as `?from=name@domain`")
    starttls = query.get("starttls", ["false"])[0].lower()
    if starttls not in ("true", "false") or (starttls == "true" and parts.scheme == "smtps"):
        raise TargetError("`starttls` is `true` or `false`, and only with smtp:// (smtps is TLS)")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if (username is None) != (password is None):
        raise TargetError("an smtp URL needs both a user and a password, or neither")
    encrypted = parts.scheme == "smtps" or starttls == "true" or _loopback(parts.hostname)
    if username is not None and not encrypted:
        raise TargetError("a password in an smtp URL needs smtps:// or `starttls=true`")
    return SmtpTarget(
        host=parts.hostname,
        port=port or _SMTP_PORTS[parts.scheme],
        sender=sender,
        username=username,
        password=password,
        implicit_tls=parts.scheme == "smtps",
        starttls=starttls == "true",
    )


def _loopback(host: str) -> bool:
    """Credentials may travel unencrypted only where they never leave the machine."""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(error: BaseException) -> str:
    """How a send failed, without the text of the error: some name the host or echo the URL."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        return _describe(error.reason)
    if isinstance(error, smtplib.SMTPResponseException):
        return f"SMTP {error.smtp_code}"
    return type(error).__name__


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: following it would resend the message (and its path) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_json(target: WebhookTarget, payload: Mapping[str, Any], *, timeout: float) -> None:
    """POST the payload; only a 2xx answer is a delivery (urllib raises on anything else)."""
    headers = {"Content-Type": "application/json", "User-Agent": "budgetops"}
    if target.authorization:
        headers["Authorization"] = target.authorization
    request = urllib.request.Request(
        target.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.build_opener(_NoRedirects()).open(request, timeout=timeout):
            pass
    except urllib.error.HTTPError as error:
        error.close()
        raise DeliveryError(_describe(error)) from None
    except OSError as error:
        raise DeliveryError(_describe(error)) from None


def send_email(target: SmtpTarget, message: EmailMessage, *, timeout: float) -> None:
    """Submit one message, logging in when the URL has credentials."""
    try:
        smtp = (
            smtplib.SMTP_SSL(
                target.host, target.port, timeout=timeout, context=ssl.create_default_context()
            )
            if target.implicit_tls
            else smtplib.SMTP(target.host, target.port, timeout=timeout)
        )
        with smtp:
            if target.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if target.username is not None and target.password is not None:
                smtp.login(target.username, target.password)
            smtp.send_message(message)
    except OSError as error:  # smtplib's and ssl's errors are OSErrors too
        raise DeliveryError(_describe(error)) from None


_PAYLOADS: dict[ChannelType, Callable[[Batch], dict[str, Any]]] = {
    "webhook": webhook_json,
    "slack": slack_json,
    "teams": teams_json,
}


def deliver(channel: Channel, secret_value: str, batch: Batch, *, timeout: float) -> None:
    """Send `batch` to `channel`, whose Secret holds `secret_value`; raises on any failure."""
    target = parse_target(channel.type, secret_value)
    if isinstance(target, WebhookTarget):
        post_json(target, _PAYLOADS[channel.type](batch), timeout=timeout)
        return
    if not channel.to:
        raise DeliveryError("the channel lists no recipients in `to`")
    message = email_message(batch, sender=target.sender, recipients=channel.to)
    send_email(target, message, timeout=timeout)
