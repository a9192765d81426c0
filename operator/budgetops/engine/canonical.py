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


def _json_number(value: object) -> int | float | str:
    """A Decimal for the C encoder: as an int when whole, as a float when the float prints
    exactly the canonical digits (2.5), else as its canonical text in a string."""
    if not isinstance(value, Decimal):
        raise TypeError(f"compact JSON cannot hold {type(value).__name__} ({value!r})")
    text = _number(value)
    if "." not in text:
        return int(text)
    as_float = float(text)
    return as_float if repr(as_float) == text else text


def compact_json(value: Any) -> bytes:
    """Sorted keys, no white space, UTF-8, at the speed of the C encoder: what signed
    payloads, audit records and content digests are. Byte for byte `canonical_json` for any
    tree of mappings, sequences, str, int and the Decimals of amounts (a test holds them
    equal); a float prints as Python's shortest repr, which is deterministic too."""
    return compact_text(value).encode("utf-8")


def compact_text(value: Any) -> str:
    """`compact_json` as text."""
    return _COMPACT.encode(value)


_COMPACT = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_number,
)
"""Made once: `json.dumps` with options builds an encoder on every call."""


def canonical_json(value: Any) -> bytes:
    """The one byte string that stands for `value` (mappings, sequences, str, int, Decimal)."""
    return _encode(value).encode("utf-8")


def config_hash(value: Any) -> str:
    """`sha256:` and 64 hex digits over the canonical JSON of `value`."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
