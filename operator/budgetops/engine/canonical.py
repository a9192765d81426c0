"""Canonical JSON and the `sha256:` config hash that attests which limits were applied.

Canonical means: keys sorted, no insignificant white space, UTF-8, and amounts as plain
decimal numbers without exponent or trailing zeros, so equal configurations hash equally
however they were written. Floats are refused: they have no exact digits to hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any


def _number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} has no JSON form")
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _encode(node: Any) -> str:
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int):
        return str(node)
    if isinstance(node, Decimal):
        return _number(node)
    if isinstance(node, str):
        return json.dumps(node, ensure_ascii=False)
    if isinstance(node, Mapping):
        items = sorted((str(key), value) for key, value in node.items())
        return "{" + ",".join(f"{_encode(key)}:{_encode(value)}" for key, value in items) + "}"
    if isinstance(node, Sequence) and not isinstance(node, bytes):
        return "[" + ",".join(_encode(value) for value in node) + "]"
    raise TypeError(f"canonical JSON cannot hold {type(node).__name__} ({node!r})")


def canonical_json(value: Any) -> bytes:
    """The one byte string that stands for `value` (mappings, sequences, str, int, Decimal)."""
    return _encode(value).encode("utf-8")


def config_hash(value: Any) -> str:
    """`sha256:` and 64 hex digits over the canonical JSON of `value`."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
