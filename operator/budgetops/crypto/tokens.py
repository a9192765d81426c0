"""Agent identity tokens: JWTs signed with HS256, with the budget control protocol's claims.

Verification pins the algorithm before anything else (a token naming `none` or any other
algorithm is refused, never tried), and turns every way a string can fail into one
InvalidToken whose message is safe to show: it never quotes the token or the key.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

AGENT_ID = re.compile(r"^agent_[a-z0-9]{6,32}$")
BUDGET_ID = re.compile(r"^budget-[a-z0-9]{6,32}$")
TOKEN_ID = re.compile(r"^[a-z0-9]{1,64}$")
DEFAULT_ISSUER = "budgetops.dev"
TOKEN_MAX = 4096
ALGORITHM = "HS256"


class InvalidToken(ValueError):
    """The token cannot be accepted; the message says why and is safe to show."""


@dataclass(frozen=True)
class AgentClaims:
    agent_id: str
    budget_id: str
    issued_at: int
    expires_at: int | None
    issuer: str
    permissions: tuple[str, ...]
    token_id: str

    def to_payload(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "budget_id": self.budget_id,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "issuer": self.issuer,
            "permissions": list(self.permissions),
            "token_id": self.token_id,
        }


def new_agent_id() -> str:
    return f"agent_{uuid.uuid4().hex}"


def new_budget_id() -> str:
    return f"budget-{uuid.uuid4().hex}"


def new_token_id() -> str:
    return uuid.uuid4().hex


def new_signing_key() -> bytes:
    return secrets.token_bytes(32)


def _format_problems(payload: dict[str, Any]) -> str | None:
    """What is wrong with the claims' types and id formats, or None."""
    for name, pattern, shape in (
        ("agent_id", AGENT_ID, "agent_<6-32 of a-z0-9>"),
        ("budget_id", BUDGET_ID, "budget-<6-32 of a-z0-9>"),
        ("token_id", TOKEN_ID, "1-64 of a-z0-9"),
    ):
        value = payload.get(name)
        if not isinstance(value, str):
            return f"the token has no {name}"
        if not pattern.fullmatch(value):
            return f"{name} {value[:40]!r} is not of the form {shape}"
    issued = payload.get("issued_at")
    if isinstance(issued, bool) or not isinstance(issued, int):
        return "issued_at must be Unix seconds (an integer)"
    expires = payload.get("expires_at", "missing")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)):
        return "expires_at must be Unix seconds (an integer) or null"
    if not isinstance(payload.get("issuer"), str):
        return "the token has no issuer"
    permissions = payload.get("permissions")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        return "permissions must be a list of strings"
    return None


def issue(claims: AgentClaims, *, key: bytes) -> str:
    payload = claims.to_payload()
    problem = _format_problems(payload)
    if problem is not None:
        raise ValueError(problem)
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify(token: str, *, key: bytes, issuer: str, now: datetime) -> AgentClaims:
    """The claims of a token signed with `key`, issued by `issuer` and not expired at `now`."""
    if not isinstance(token, str) or not token:
        raise InvalidToken("the token is empty")
    if len(token.encode("utf-8", "replace")) > TOKEN_MAX:
        raise InvalidToken(f"the token is longer than {TOKEN_MAX} bytes")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, json.JSONDecodeError):
        raise InvalidToken("the token is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        shown = algorithm if isinstance(algorithm, str) else type(algorithm).__name__
        raise InvalidToken(f"the token is signed with {shown[:20]}; only {ALGORITHM} is accepted")
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not match") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken("the token is not a JWT") from None
    if not isinstance(payload, dict):
        raise InvalidToken("the token's claims are not an object")
    problem = _format_problems(payload)
    if problem is not None:
        raise InvalidToken(problem)
    if not hmac.compare_digest(payload["issuer"].encode(), issuer.encode()):
        raise InvalidToken(f"the token was issued by {payload['issuer'][:60]!r}, not {issuer!r}")
    expires = payload["expires_at"]
    if expires is not None:
        try:
            expired = expires <= now.timestamp()
            shown = _when(expires)
        except (OverflowError, OSError, ValueError):
            raise InvalidToken("expires_at is out of range") from None
        if expired:
            raise InvalidToken(f"the token expired at {shown}")
    return AgentClaims(
        agent_id=payload["agent_id"],
        budget_id=payload["budget_id"],
        issued_at=payload["issued_at"],
        expires_at=expires,
        issuer=payload["issuer"],
        permissions=tuple(payload["permissions"]),
        token_id=payload["token_id"],
    )


def same_token_id(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
