"""Agent identity tokens: JWTs signed with HS256, with the budget control protocol's claims.

Verification pins the algorithm before anything else (a token naming `none` or any other
algorithm is refused, never tried), and turns every way a string can fail into one
InvalidToken whose message is safe to show: it never quotes the token or the key.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

AGENT_ID = re.compile(r"^agent_[a-z0-9]{6,32}$")
BUDGET_ID = re.compile(r"^budget-[a-z0-9]{6,32}$")
DEFAULT_ISSUER = "budgetops.dev"
TOKEN_MAX = 4096
TOKEN_ID_MAX = 64
TOKEN_ID = re.compile(rf"^[a-z0-9]{{1,{TOKEN_ID_MAX}}}$")
"""What an agent record may hold (apis.agents), so a verified token_id always compares."""
ALGORITHM = "HS256"
ISSUED_AHEAD_MAX = 300
"""Seconds a token's issued_at may lie ahead of this clock (clocks differ a little)."""
_CLAIMS = (
    "agent_id",
    "budget_id",
    "issued_at",
    "expires_at",
    "issuer",
    "permissions",
    "token_id",
)
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9]{1,20}$")
# What malformed base64, JSON or headers raise, whichever pyjwt version wraps which.
_MALFORMED = (jwt.PyJWTError, ValueError, TypeError, RecursionError)


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

    def __post_init__(self) -> None:
        if isinstance(self.permissions, str):  # a tuple of its letters is never what was meant
            raise TypeError("permissions must be a sequence of strings, not one string")

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
    """What is wrong with the claims' presence, types and id formats, or None."""
    missing = [name for name in _CLAIMS if name not in payload]
    if missing:
        return f"the token has no {missing[0]} claim"
    for name, pattern, shape in (
        ("agent_id", AGENT_ID, "agent_<6-32 of a-z0-9>"),
        ("budget_id", BUDGET_ID, "budget-<6-32 of a-z0-9>"),
    ):
        value = payload[name]
        if not isinstance(value, str):
            return f"{name} must be a string"
        if not pattern.fullmatch(value):
            return f"{name} {value[:40]!r} is not of the form {shape}"
    token_id = payload["token_id"]
    if not isinstance(token_id, str) or not TOKEN_ID.fullmatch(token_id):
        return f"token_id must be 1 to {TOKEN_ID_MAX} characters of a-z0-9"
    if not _is_int(payload["issued_at"]):
        return "issued_at must be Unix seconds (an integer)"
    expires = payload["expires_at"]
    if expires is not None and not _is_int(expires):
        return "expires_at must be Unix seconds (an integer) or null"
    if not isinstance(payload["issuer"], str):
        return "issuer must be a string"
    permissions = payload["permissions"]
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        return "permissions must be a list of strings"
    return None


def _is_int(value: object) -> bool:
    """JSON true would otherwise pass as the integer 1."""
    return isinstance(value, int) and not isinstance(value, bool)


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
    if not isinstance(token, str):
        raise InvalidToken("the token must be text")
    if not token:
        raise InvalidToken("the token is empty")
    if len(token.encode("utf-8", "replace")) > TOKEN_MAX:
        raise InvalidToken(f"the token is longer than {TOKEN_MAX} bytes")
    try:
        header = jwt.get_unverified_header(token)
    except _MALFORMED:
        raise InvalidToken("the token is not a JWT") from None
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        raise InvalidToken(
            f"the token is signed with {_shown(algorithm)}; only {ALGORITHM} is accepted"
        )
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            # These claims are not the registered exp/iat/iss ones: pyjwt checks none of them.
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not match") from None
    except _MALFORMED:
        raise InvalidToken("the token is not a JWT") from None
    problem = _format_problems(payload)
    if problem is not None:
        raise InvalidToken(problem)
    if payload["issuer"] != issuer:
        raise InvalidToken(f"the token was issued by {payload['issuer'][:60]!r}, not {issuer!r}")
    _check_times(payload, now)
    expires = payload["expires_at"]
    return AgentClaims(
        agent_id=payload["agent_id"],
        budget_id=payload["budget_id"],
        issued_at=payload["issued_at"],
        expires_at=expires,
        issuer=payload["issuer"],
        permissions=tuple(payload["permissions"]),
        token_id=payload["token_id"],
    )


def _check_times(payload: dict[str, Any], now: datetime) -> None:
    """Refuse a token expired at `now`, or issued further ahead than clocks differ."""
    expires = payload["expires_at"]
    if expires is not None:
        try:
            expired = expires <= now.timestamp()
            shown = _when(expires)
        except (OverflowError, OSError, ValueError):
            raise InvalidToken("expires_at is out of range") from None
        if expired:
            raise InvalidToken(f"the token expired at {shown}")
    if payload["issued_at"] > now.timestamp() + ISSUED_AHEAD_MAX:
        raise InvalidToken("the token says it was issued in the future")


def _shown(algorithm: object) -> str:
    """A header's alg as a message may show it: plain when it is a name, quoted otherwise."""
    if algorithm is None:
        return "no algorithm"
    if isinstance(algorithm, str):
        return algorithm if _PLAIN_NAME.fullmatch(algorithm) else repr(algorithm[:20])
    return f"a JSON {type(algorithm).__name__}"
