"""Numbers from outside, read with their size bounded before any arithmetic touches them.

`Decimal("1e1000000")` is finite, and formatting it builds a million-digit integer; `int()`
takes `"١٢"`, `"1_000"`, `"+5"` and `" 5"`. Every number BudgetOps reads from a person, an
annotation, a message or a manifest passes through here instead: ASCII digits only, a
bounded count of digits, no exponent, and amounts in a form the ledger writes and reads back
(at most six decimals, never scientific notation), so what is accepted is what is stored.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from budgetops.apis.names import unprintable

PLACES = 6
"""Decimals an amount may have: sub-cent costs (an LLM call of 0.0457 USD) are exact."""

WHOLE_DIGITS = 15
"""Whole digits an amount may have. With six decimals that is 21 significant digits, inside
Decimal's 28: sums over thousands of accounts and carried-over balances stay exact."""

TEXT_MAX = 64
"""Characters a number may be written with (leading zeros included), checked first."""

_DIGITS_MAX = 40
"""Digits a Decimal value may carry in, trailing zeros included (`0.0100` from JSON)."""

_CENT = Decimal("0.01")
_SPACE = " \t\r\n"
"""White space around a number that is ignored: ASCII only, as YAML and shells write it."""
_WHOLE = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(rf"0*[0-9]{{1,{WHOLE_DIGITS}}}(\.[0-9]{{1,{PLACES}}})?")


COUNTS_TEXT_MAX = 4096
"""Characters a set of counts by reason may be written with: a few dozen reasons."""
REASONS_MAX = 64
REASON_MAX = 63
"""Characters a reason's name may have (`Reachability`, `Identity`)."""
COUNT_MAX = 1_000_000
"""The most one reason may count: a RiskBudget's `maxUnknownCount` stops there too."""


class NumberError(ValueError):
    """A number that is not written or bounded as BudgetOps reads it; says what to write."""


def quoted(value: object) -> str:
    """The value as an error may quote it: short, and never a huge number spelled out."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a number of more than 19 digits"
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


def whole(value: object, *, low: int, high: int, of: str = "") -> int:
    """A whole number from `low` to `high`, as an int or in ASCII digits (a `-` allowed).

    Surrounding ASCII white space is ignored; `+`, `_`, inner spaces and other scripts'
    digits are not, so every reader of a count agrees with `--cost` and the CRD patterns.
    `of` names the unit in the message ("risk points").
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value if value.bit_length() <= 64 else None
    elif (
        isinstance(value, str) and len(value) <= TEXT_MAX and _WHOLE.fullmatch(value.strip(_SPACE))
    ):
        number = int(value.strip(_SPACE))
    if number is None:
        unit = f" of {of}" if of else ""
        raise NumberError(f"must be a whole number{unit}, not {quoted(value)}")
    if not low <= number <= high:
        raise NumberError(f"must be between {low} and {high}, not {number}")
    return number


def money_text(value: Decimal) -> str:
    """A non-whole amount as people and verdicts read it: to the cent (`0.50`), with its
    sub-cent digits when it has any (`0.0457`), never rounded. For amounts `amount` read."""
    cents = value.quantize(_CENT)
    return f"{cents}" if cents == value else f"{value.normalize():f}"


def show(amount: Decimal, unit: str) -> str:
    """An amount as people read it: `1` point, `0.50` USD, and `0.0457` USD unrounded.

    USD is shown to the cent; sub-cent digits, when there are any, are shown rather than
    rounded away, so a denial never shows a balance that seems to cover the cost it refused.
    """
    return money_text(amount) if unit == "USD" else f"{amount:f}"


def amount(value: object) -> Decimal:
    """A non-negative amount with at most PLACES decimals and WHOLE_DIGITS whole digits.

    Accepts an int, a Decimal (a JSON number read as one) or a decimal string; refuses
    floats (they have lost digits already), exponents, signs and NaN/Infinity. The bounds
    are checked on the digits as given, before any arithmetic. The result is in the form
    the ledger writes and reads back: no exponent, at most PLACES decimals. A number loses
    its trailing zeros (`0.0100000` is `0.01`; `1E+2` and `1E-400` are refused); a string,
    as a manifest spells it, keeps the decimals it was written with (`10.50`).
    """
    if isinstance(value, str):
        text = value.strip(_SPACE)
        if len(value) > TEXT_MAX or not _DECIMAL.fullmatch(text):  # padding counts too
            raise _refused(value)
        return Decimal(text)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise NumberError(f"an amount must be a number, not {quoted(value)}")
    if isinstance(value, int):
        if value < 0 or value.bit_length() > 64:
            raise _refused(value)
        value = Decimal(value)
    if not value.is_finite() or (value.is_signed() and value):
        raise _refused(value)
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if len(digits) > _DIGITS_MAX:
        raise _refused(value)
    kept = len(digits)
    while exponent < 0 and kept > 1 and digits[kept - 1] == 0:
        kept, exponent = kept - 1, exponent + 1
    if not -PLACES <= exponent <= 0 or kept + exponent > WHOLE_DIGITS:
        raise _refused(value)
    return Decimal((0, digits[:kept], exponent)) if value else Decimal(0)


def _refused(value: object) -> NumberError:
    return NumberError(
        f"{quoted(value)} is not an amount: use a non-negative number with at most {PLACES} "
        f"decimals and at most {WHOLE_DIGITS} digits before the point"
    )


def counts(text: str) -> dict[str, int]:
    """Whole counts by reason, as a JSON object (`{"Reachability": 2}`): the unknowns a
    release reports, from an annotation or a flag. Bounded as it is read (the text, the
    number of reasons, each name, each count as digits before `int` sees it), so no input
    costs more to read than its few kilobytes or stores a name a ledger would not take."""
    parsed: Any = None
    if len(text) <= COUNTS_TEXT_MAX:
        try:
            parsed = json.loads(
                text, parse_int=_count, parse_float=_not_whole, parse_constant=_not_whole
            )
        except (ValueError, RecursionError):
            parsed = None
    if (
        not isinstance(parsed, dict)
        or len(parsed) > REASONS_MAX
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in parsed.values())
        or not all(0 < len(k) <= REASON_MAX and unprintable(k) is None for k in parsed)
    ):
        raise NumberError(
            'must be a JSON object of counts, e.g. {"Reachability": 2}, with at most '
            f"{REASONS_MAX} reasons (names of 1 to {REASON_MAX} printable characters) of 0 "
            f"to {COUNT_MAX} each, not {quoted(text)}"
        )
    return dict(parsed)


def _count(text: str) -> int:
    return whole(text, low=0, high=COUNT_MAX)


def _not_whole(text: str) -> int:
    raise NumberError(f"{text} is not a whole count")
