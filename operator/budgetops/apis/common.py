"""Types every BudgetOps resource shares: money, durations, conditions, the model base.

Money is `Decimal` end to end. In manifests an amount is an integer (`cost: 1`) or a
string with at most six decimals (`amount: "10.50"`, `cost: "0.0457"`); a YAML float is
refused because it has already lost precision by the time we see it. Every amount is read
by `numbers.amount`, in the form the ledger writes and reads back.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from budgetops.apis.numbers import PLACES, WHOLE_DIGITS, amount, money_text

GROUP = "budgetops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

AMOUNT_DIGITS = WHOLE_DIGITS
"""Whole digits an amount may have (see `numbers.WHOLE_DIGITS`)."""

AMOUNT_PLACES = PLACES
"""Decimals an amount may have (see `numbers.PLACES`)."""

MAX_AMOUNT = Decimal(10**AMOUNT_DIGITS) - Decimal(10) ** -AMOUNT_PLACES
"""The largest amount a manifest, a status or a charge may hold."""

_AMOUNT_PATTERN = rf"^0*[0-9]{{1,{AMOUNT_DIGITS}}}(\.[0-9]{{1,{AMOUNT_PLACES}}})?$"
_DURATION_PATTERN = r"^([0-9]{1,4}d)?([0-9]{1,5}h)?([0-9]{1,6}m)?([0-9]{1,8}s)?$"
"""At most 9999d 99999h 999999m 99999999s (about 44 years): the digits are bounded so that
no duration a manifest may hold overflows the date arithmetic of windows and expiries."""
_DURATION = re.compile(_DURATION_PATTERN)


class Model(BaseModel):
    """Base for every spec and status: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        defer_build=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """Model config that carries CEL rules, as (rule, message), into the generated CRD.

    Each rule restates a model validator for the API server, which never runs our Python.
    """
    validations = [{"rule": rule, "message": message} for rule, message in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})  # type: ignore[dict-item]


def parse_amount(value: object) -> Decimal:
    """Read an amount the way a manifest may spell it; refuse what would lose digits."""
    if isinstance(value, float):
        raise ValueError(
            f'write the amount {value!r} as a quoted string (for example "{value:.2f}"): '
            "floating-point numbers lose cents"
        )
    if isinstance(value, str):
        return _amount(value)
    return amount(value)


@lru_cache(maxsize=4096)
def _amount(text: str) -> Decimal:
    """Cached: a status spells the same few balances hundreds of times, and every read of a
    budget parses them all (Decimals are immutable, so sharing one is safe)."""
    return amount(text)


def format_amount(value: Decimal) -> int | str:
    """Whole amounts stay integers on the wire; others are exact (`0.50`, `0.0457`)."""
    return int(value) if value == value.to_integral_value() else money_text(value)


# Amounts are int-or-string the way Kubernetes' own Quantity is: the pattern and bounds
# apply to whichever form is given. Inside status accounts the CRD checks nothing (see
# `apis.ledger.Accounts`): those amounts rely on this module's parsing on every read.
_AMOUNT_SCHEMA: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": _AMOUNT_PATTERN,
    "maxLength": 32,
    "minimum": 0,
    "maximum": 10**AMOUNT_DIGITS - 1,
}

Amount = Annotated[Decimal, BeforeValidator(parse_amount), WithJsonSchema(_AMOUNT_SCHEMA)]
"""A non-negative amount of points or money; written back as an exact decimal string.

Serialization is pydantic's own (in Rust): a status holds hundreds of amounts and is
written on every charge, and a Python serializer per value was most of that write.
"""

_POSITIVE_SCHEMA: dict[str, Any] = {
    **_AMOUNT_SCHEMA,
    "minimum": 1,
    "x-kubernetes-validations": [
        {
            "rule": "type(self) == int ? self > 0 : "
            f"(self.matches('^[0-9]+(\\\\.[0-9]{{1,{AMOUNT_PLACES}}})?$') && double(self) > 0.0)",
            "message": f"must be a positive amount with at most {AMOUNT_PLACES} decimals",
        }
    ],
}
"""Spec amounts are few and bounded, so a CEL rule can give the calm message too."""


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


PositiveAmount = Annotated[
    Decimal, BeforeValidator(lambda v: _positive(parse_amount(v))), WithJsonSchema(_POSITIVE_SCHEMA)
]
"""A cost or grant: an amount that must be above zero."""


def parse_duration(value: object) -> timedelta:
    """Read `30s`, `15m`, `24h`, `7d` or a combination such as `1h30m`."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("a duration is a string such as 30s, 15m, 24h or 7d")
    match = _DURATION.fullmatch(value)
    if not match or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration: use forms such as 30s, 15m, 24h or 7d")
    days, hours, minutes, seconds = (int((part or "0").rstrip("dhms")) for part in match.groups())
    delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if delta <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    return delta


def format_duration(value: timedelta) -> str:
    """A spelling that `parse_duration` reads back to the same value.

    Days are used from two days on, so the common `24h` and `36h` stay as people write them.
    Each unit takes at most what the pattern lets it hold and leaves the rest to smaller ones,
    so every duration `parse_duration` accepts is written in a form it accepts again.
    """
    seconds = int(value.total_seconds())
    units = (("d", 86400, 9999), ("h", 3600, 99999), ("m", 60, 999999), ("s", 1, 99999999))
    parts = []
    for unit, size, most in units if seconds >= 2 * 86400 else units[1:]:
        count = min(seconds // size, most)
        seconds -= count * size
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 32,
            "pattern": _DURATION_PATTERN,
            "x-kubernetes-validations": [
                {
                    "rule": "self.matches('[1-9]')",
                    "message": "a duration must be longer than zero, such as 30s, 15m, 24h or 7d",
                }
            ],
        }
    ),
]
"""A positive duration written the Kubernetes way (`24h`), with `d` for days. The pattern
lets every part be absent, so the CEL rule refuses what holds no non-zero digit ("", "0s")."""


def _utc(value: datetime) -> datetime:
    """Refuse naive datetimes where an instant is meant, so no clock is ever guessed."""
    if value.tzinfo is None:
        raise ValueError("a timestamp needs a time zone; write it in UTC with a trailing Z")
    return value.astimezone(UTC)


@lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as Kubernetes writes timestamps (whole seconds).

    Cached: receipts name the same few reset instants thousands of times a second.
    """
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


Timestamp = Annotated[
    datetime, AfterValidator(_utc), WithJsonSchema({"type": "string", "format": "date-time"})
]
"""A UTC instant, written as RFC 3339 with a `Z` by pydantic's own serializer."""


Percent = Annotated[int, Field(ge=0, le=100)]

Unit = Literal["points", "USD"]
Enforcement = Literal["enforce", "warn"]
FailMode = Annotated[
    Literal["failClosed", "failOpen"],
    Field(
        description=(
            "When this budget's ledger cannot be reached or written in time: failClosed "
            "refuses the request, failOpen admits it uncharged by this budget and settles "
            "the charge once the store answers (kept in the webhook's memory only)"
        )
    ),
]
"""A budget's `failMode`: what its step of a charge does when its store does not answer in
time (`docs/admission.md`, "Fail mode per budget")."""
ConditionStatus = Literal["True", "False", "Unknown"]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Condition(Model):
    """A Kubernetes-convention condition; `lastTransitionTime` moves only when status flips."""

    type: str = Field(max_length=64)
    status: ConditionStatus
    reason: str = Field(max_length=128, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=1024)
    last_transition_time: Timestamp
    observed_generation: int | None = Field(default=None, ge=0)


class SecretKeyRef(Model):
    """Where a credential lives; the value itself never appears in a spec or status."""

    name: str = Field(max_length=253, pattern=NAME_PATTERN)
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
