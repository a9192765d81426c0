"""Reading lease API bodies and writing its answers: JSON with money as exact decimals.

A body is read as JSON with numbers that have a fraction kept as Decimal, so `0.1` is ten
cents and not a float near it; `NaN` and `Infinity`, which Python's parser would accept,
are refused. Answers write Decimals as JSON numbers with at least two decimals and as many
more as the exact amount has (`10.00`, `0.0457`): what the ledger counted, to the micro-dollar.
"""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from budgetops.apis.numbers import money_text
from budgetops.usecases.leasing import ApiError

BODY_MAX = 1024 * 1024


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse(body: bytes, model: type[BaseModel]) -> Any:
    """The request as `model`, or an ApiError 400 that names what is wrong."""
    try:
        document = json.loads(body, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError:
        raise ApiError(400, "INVALID_REQUEST", "the body nests too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise ApiError(400, "INVALID_REQUEST", f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "INVALID_REQUEST", "the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item["loc"]) or "body"
            problems.append(f"{where}: {item['msg']}")
        raise ApiError(400, "INVALID_REQUEST", "; ".join(problems)) from None


_MARK = secrets.token_hex(8)
_MONEY = re.compile(rf'"{_MARK}(-?[0-9]+\.[0-9]{{2,}})"')


def _marked(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{_MARK}{money_text(value)}"
    if isinstance(value, dict):
        return {key: _marked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_marked(item) for item in value]
    return value


def dumps(document: dict[str, Any]) -> str:
    """JSON in which every Decimal is an exact number with two decimals at least (`10.00`)."""
    return _MONEY.sub(r"\1", json.dumps(_marked(document), separators=(",", ":")))


def error_body(error: ApiError) -> str:
    return dumps({"error": {"code": error.code, "message": error.message}})
