"""JSON as the protocol writes it: money as exact numbers with two decimals at least, parsed
back as Decimal."""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal

from budgetops.client.errors import InvalidToken, ProtocolError

JsonObject = dict[str, object]


def dumps(value: object) -> str:
    """JSON text with every Decimal written as an exact number with two decimals at least
    (10.00, 0.0457; not 10.0 or "10.00"): the json module can only write Decimals through
    float or as strings."""
    if isinstance(value, Decimal):
        cents = f"{value:.2f}"
        return cents if Decimal(cents) == value else f"{value.normalize():f}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    return json.dumps(value)


def loads(text: str | bytes) -> JsonObject:
    """A JSON object with its fractional numbers as Decimal, never float."""
    value = json.loads(text, parse_float=Decimal)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def text(answer: JsonObject, key: str) -> str:
    """A string field of an answer; a missing or mistyped one is the server's fault."""
    value = answer.get(key)
    if not isinstance(value, str):
        raise ProtocolError("BAD_RESPONSE", f"the answer has no string {key!r}")
    return value


def integer(answer: JsonObject, key: str) -> int:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("BAD_RESPONSE", f"the answer has no integer {key!r}")
    return value


def money(answer: JsonObject, key: str) -> Decimal:
    """A USD field of an answer, as Decimal."""
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ProtocolError("BAD_RESPONSE", f"the answer has no number {key!r}")
    return Decimal(value)


def budget_id_of(token: str) -> str:
    """The `budget_id` claim of the identity token, which the refresh must name. Read, not
    verified: the control plane verifies, the runtime only needs to say which budget."""
    try:
        payload = token.split(".")[1]
        claims = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as error:
        raise InvalidToken("the identity token is not a JWT") from error
    budget_id = claims.get("budget_id")
    if not isinstance(budget_id, str):
        raise InvalidToken("the identity token has no budget_id claim")
    return budget_id
