"""JSON bodies from the network, read with their numbers and nesting bounded.

Python's parser turns digits of any length into an int (past 4,300 it raises a ValueError
nobody expected: the webhook answered aiohttp's plain 500), reads `1e400` as infinity and
`NaN` as a float, and recurses once per level of nesting until the interpreter's limit,
which depends on how deep the caller's stack already is. `read_json` refuses each of them
with a JsonError that names the first problem. When the body did parse, the error carries
the document (with the refused numbers as None), so that a caller can still answer in kind:
the webhook denies an AdmissionReview by its uid, since the API server takes any other
status for a failed webhook. (The lease API's bodies are read by leaseapi.wire, which keeps
fractions as Decimal and names the field a number out of bounds was given for.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

NUMBER_CHARS = 64
"""Characters a JSON number may be written with. The API server writes int64 and float64
(at most 24)."""

MAX_DEPTH = 100
"""Levels of nesting a body may have. A Deployment's deepest field in an AdmissionReview
is about 15 levels down."""


class JsonError(ValueError):
    """A body that is not JSON within the bounds; `document` is what parsed, if it did."""

    def __init__(self, message: str, document: Any = None) -> None:
        super().__init__(message)
        self.document = document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels, level by level (no recursion)."""
    level = [document] if isinstance(document, dict | list) else []
    for _ in range(limit):
        deeper: list[Any] = []
        for value in level:
            children = value.values() if type(value) is dict else value
            deeper += [c for c in children if type(c) is dict or type(c) is list]
        if not deeper:
            return False
        level = deeper
    return True


def read_json(body: bytes | str) -> Any:
    """The document `body` holds; JsonError if it is not JSON or breaks a bound."""
    problems: list[str] = []

    def number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
        def read(text: str) -> Any:
            if len(text) > NUMBER_CHARS:
                problems.append(
                    f"the body holds a number written with {len(text)} characters "
                    f"(at most {NUMBER_CHARS})"
                )
                return None
            value = convert(text)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"the body holds {text}, a number out of range")
                return None
            return value

        return read

    def constant(name: str) -> None:
        problems.append(f"{name} is not a number JSON allows")

    try:
        document = json.loads(
            body,
            parse_int=number(int),
            parse_float=number(float),
            parse_constant=constant,
        )
    except RecursionError:
        raise JsonError(f"the body nests more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise JsonError(f"the body is not JSON: {error}") from None
    if problems:
        raise JsonError(problems[0], document)
    if _deeper_than(document, MAX_DEPTH):
        raise JsonError(f"the body nests more than {MAX_DEPTH} levels deep", document)
    return document
