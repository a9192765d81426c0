"""A status kept as rows: one for what every charge rewrites, one per entry of its big maps.

A budget's status holds a few maps that grow with its accounts and its traffic: the accounts,
the settled keys, the release ids and which accounts alert. Written as one document, each
charge would rewrite all of them, and a budget of 100,000 accounts would cost 10,000 times
one of ten. So the embedded ledger stores each entry of those maps as its own row and the
rest of the status (recent entries, the audit head, conditions: bounded) as the budget's row.

`Tracked` is what makes a write proportional to what a change touched: the maps of a status
in memory are Tracked dicts, which note each key a change set, deleted or (for mutable
values, such as an account) read; `Rows.changes` turns those notes into the rows to write,
each checked to read back with its own model before anything is written.

What a budget holds that the engine adds and drops but never changes (its recent entries,
an account's reservations) is encoded once per object and checked once, when it is new
(`Parts`): a hot account holds every reservation not yet confirmed, and encoding and checking
them all again on every write was most of what a charge cost (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json

from budgetops.apis.ledger import ENTRIES_KEPT, Ledger
from budgetops.apis.resources import Budget, BudgetKey, field_errors
from budgetops.engine.ledger import InvalidCharge

V = TypeVar("V")

KEYED = {"accounts": True, "settled": False, "releases": False, "alerting": False}
"""The status maps stored a row per entry, and whether a change may mutate an entry in place
(an account: so reading one marks it; a timestamp, a release mark or a list of alerts is
only ever replaced)."""

RECORDS = {"accounts": "reservations"}
"""Maps whose entries hold, under this field, records the engine adds and removes but never
changes in place (an account's reservations, by key): see `Parts`. The field's name is a
single word, so it is its own wire name."""


class Tracked(dict[str, V]):
    """A dict that notes the keys a change touched: set or deleted, or read when `mutable`;
    anything that hands out every value (`values`, `items`) notes `everything`."""

    __slots__ = ("everything", "mutable", "touched")

    def __init__(self, items: dict[str, V], *, mutable: bool) -> None:
        super().__init__(items)
        self.mutable = mutable
        self.touched: set[str] = set()
        self.everything = False

    def settle(self) -> None:
        """Forget what was touched: it has been written."""
        self.touched = set()
        self.everything = False

    def __getitem__(self, key: str) -> V:
        if self.mutable:
            self.touched.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if self.mutable:
            self.touched.add(key)
        return super().get(key, default)

    def __setitem__(self, key: str, value: V) -> None:
        self.touched.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.touched.add(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self.touched.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.touched.add(key)
        return super().setdefault(key, default)

    def values(self) -> Any:
        self.everything |= self.mutable
        return super().values()

    def items(self) -> Any:
        self.everything |= self.mutable
        return super().items()

    def update(self, *args: Any, **kwargs: Any) -> None:  # rare: take it all as touched
        super().update(*args, **kwargs)
        self.everything = True

    def popitem(self) -> tuple[str, V]:
        key, value = super().popitem()
        self.touched.add(key)
        return key, value

    def clear(self) -> None:
        self.touched |= set(self)
        super().clear()


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """Validates one map of `model` (with its key and value rules), as a whole status would."""
    info = model.model_fields[name]
    return TypeAdapter(info.rebuild_annotation())


_RECORD_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _dump(value: Any, **options: Any) -> str:
    """One record (an entry, an account, a reservation) as a status holds it."""
    model = type(value)
    adapter = _RECORD_ADAPTERS.get(model)
    if adapter is None:
        adapter = _RECORD_ADAPTERS[model] = TypeAdapter(model)
    return adapter.dump_json(value, by_alias=True, exclude_none=True, **options).decode()


def _key(key: str) -> str:
    """A map's key as pydantic writes it (UTF-8, not \\u escapes as `json.dumps`)."""
    return to_json(key).decode()


_FIELDS_AFTER: dict[tuple[Any, str], set[str]] = {}


def _fields_after(model: Any, name: str) -> set[str]:
    """The fields `model` (a pydantic model or dataclass) declares after `name`."""
    found = _FIELDS_AFTER.get((model, name))
    if found is None:
        names = (
            list(model.model_fields)
            if issubclass(model, BaseModel)
            else [f.name for f in dataclasses.fields(model)]
        )
        found = _FIELDS_AFTER[model, name] = set(names[names.index(name) + 1 :])
    return found


def _joined(value: Any, name: str, encode: Callable[..., str]) -> Callable[[Iterable[str]], str]:
    """What writes `value` as `encode` (with `exclude` or `include`) writes it whole, but
    with its field `name` (a single word: its own wire name) joined from the JSON of each
    of its records, in its place: the same bytes, so a row reads, and compares, as it
    always did. `value` is encoded, but that field, once."""
    after = _fields_after(type(value), name)
    before = encode(exclude={name, *after})[1:-1]
    rest = encode(include=after)[1:-1] if after else ""
    opening, closing = ("[", "]") if isinstance(getattr(value, name), list) else ("{", "}")

    def join(records: Iterable[str]) -> str:
        parts = (before, f'"{name}":{opening}{",".join(records)}{closing}', rest)
        return f"{{{','.join(part for part in parts if part)}}}"

    return join


@dataclass
class Parts:
    """The records one row holds that the engine adds and drops but never changes in place
    (RECORDS; the recent entries), each encoded once. A record's tag is (key, id) in a map,
    its id in a list; `pins` keeps each record, so its id stays unique while it is here.
    `written`: the tags of those in a row written, which a check leaves out (no row is
    written unchecked). A hot account holds hundreds of reservations: what is done per
    record, in Python, is done only for the new ones."""

    pins: dict[Hashable, object] = field(default_factory=dict)
    texts: dict[Hashable, str] = field(default_factory=dict)
    """By tag, its JSON (after its key, in a map)."""
    written: set[Hashable] = field(default_factory=set)
    last: tuple[list[Hashable], list[str]] = ([], [])
    """The tags and JSON of the last records encoded: a batch encodes the same twice."""

    def encode(self, records: dict[str, Any] | list[Any]) -> tuple[list[Hashable], list[str]]:
        """The tags and JSON of `records` (a map, or a list), in order; those gone are
        forgotten."""
        values = list(records.values()) if isinstance(records, dict) else records
        tags: list[Hashable] = (
            list(zip(records, map(id, values), strict=True))
            if isinstance(records, dict)
            else list(map(id, values))
        )
        if tags == self.last[0]:
            return self.last
        pins = dict(zip(tags, values, strict=True))
        known = self.texts  # still pinned by self.pins: no new tag is an old one's
        for tag in pins.keys() - known.keys():
            text = _dump(pins[tag])
            known[tag] = f"{_key(tag[0])}:{text}" if isinstance(tag, tuple) else text
        texts = list(map(known.__getitem__, tags))
        self.pins, self.texts = pins, dict(zip(tags, texts, strict=True))
        self.written.intersection_update(pins)
        self.last = (tags, texts)
        return self.last

    def fresh(self, tags: Iterable[Hashable]) -> list[str]:
        """The JSON of the records tagged `tags` (of the last encoded) less those written."""
        return [self.texts[tag] for tag in set(tags).difference(self.written)]


def keyed(status: BaseModel) -> Iterator[str]:
    """The maps of `status` kept a row per entry."""
    return (name for name in KEYED if name in type(status).model_fields)


@dataclass
class Changes:
    """What one write stores: the budget's row, and the rows of its maps to put and drop."""

    head: str
    put: list[tuple[str, str, str]] = field(default_factory=list)
    """(map, key, row) for each entry set or changed; the row is the JSON of a map holding
    that one entry, exactly what is checked to read back."""
    drop: list[tuple[str, str]] = field(default_factory=list)
    """(map, key) for each entry gone."""


@dataclass
class Rows:
    """The maps of one budget's status as they were last read or written, for `changes`.

    `written` holds each mutable entry as last written, so a change that read every account
    (a reconcile pass) writes only those that differ."""

    maps: dict[str, Tracked[Any]] = field(default_factory=dict)
    written: dict[tuple[str, str], str] = field(default_factory=dict)
    head: str | None = None
    """The budget's row as last written here (None: as read, not known to match)."""
    version: int | None = None
    """The stored version this was read or written as (the store's to set)."""
    moved: bool = False
    """The budget's row still held its maps inline (a ledger written before rows): the next
    write moves every entry out, in the same transaction."""
    held: dict[int, object] = field(default_factory=dict)
    """The recent entries as read or written, by identity (kept, so an id stays unique): the
    engine adds and drops entries but never changes one, so only new ones need a check."""
    parts: dict[tuple[str, str], Parts] = field(default_factory=dict)
    """By (map, key) of a RECORDS map, and ("entries", "") for the recent entries."""
    replaced: dict[tuple[str, str], tuple[object, str]] = field(default_factory=dict)
    """The rows of entries set since the maps were tracked, in maps whose entries are only
    ever replaced (KEYED), with the value each was encoded from: a batch's check and its
    write encode the same rows (a settling batch: hundreds of keys)."""

    def track(self, status: BaseModel) -> None:
        """Make the maps of `status` Tracked (as read, or as just written)."""
        self.held = {id(entry): entry for entry in getattr(status, "entries", ())}
        self.replaced = {}
        for name in keyed(status):
            current = getattr(status, name)
            if not isinstance(current, Tracked):
                current = Tracked(current, mutable=KEYED[name])
                setattr(status, name, current)
            current.settle()
            self.maps[name] = current

    def changes(self, budget: Budget) -> Changes:
        """The rows a write of `budget` stores (`check` says whether they read back)."""
        status = budget.status
        names = list(keyed(status))
        put, drop, _ = self._entries(status, names)
        return Changes(self._head(status, names), put, drop)

    def check(self, key: BudgetKey, budget: Budget) -> None:
        """Raise InvalidCharge, naming the budget, unless what a write of `budget` would
        store reads back, each map's rows with their own model (at once): group commit's
        `readback`. What a row holds that was written before (`Parts`) is left out."""
        status = budget.status
        names = list(keyed(status))
        self._check_head(key, status, names)
        checks: dict[str, list[str]] = {}
        for name, text in self._entries(status, names)[2]:
            checks.setdefault(name, []).append(text[1:-1])
        for name, texts in checks.items():
            _check(key, _adapter(type(status), name).validate_json, f"{{{','.join(texts)}}}")

    def _head(self, status: BaseModel, names: list[str]) -> str:
        """The budget's row: its status but the maps, the recent entries joined as encoded."""
        if not isinstance(status, Ledger):
            return status.model_dump_json(by_alias=True, exclude_none=True, exclude=set(names))
        _, entries = self._parts(("entries", "")).encode(status.entries)

        def encode(*, include: set[str] | None = None, exclude: set[str] | None = None) -> str:
            return status.model_dump_json(
                by_alias=True,
                exclude_none=True,
                include=None if include is None else include - set(names),
                exclude=None if exclude is None else exclude | set(names),
            )

        return _joined(status, "entries", encode)(entries)

    def _parts(self, at: tuple[str, str]) -> Parts:
        found = self.parts.get(at)
        if found is None:
            found = self.parts[at] = Parts()
        return found

    def _entries(
        self, status: BaseModel, names: list[str]
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
        """The map entries to put (as rows) and to drop since the maps were tracked, and
        (map, text) of what of each row put needs a check."""
        put: list[tuple[str, str, str]] = []
        drop: list[tuple[str, str]] = []
        checks: list[tuple[str, str]] = []
        for name in names:
            now: dict[str, Any] = getattr(status, name)
            before = self.maps.get(name)
            if self.moved or before is None or now is not before:
                old = set() if before is None else before.keys()
                drop += [(name, k) for k in old - now.keys()]
                touched: list[str] = list(now)
            elif before.everything:
                touched = list(now)
            else:
                touched = list(before.touched)
            adapter = _adapter(type(status), name)
            for entry in touched:
                if entry not in now:
                    if before is not None and now is before:
                        drop.append((name, entry))
                    continue
                text, check = self._row(adapter, name, entry, dict.__getitem__(now, entry))
                if KEYED[name] and self.written.get((name, entry)) == text and not self.moved:
                    continue
                put.append((name, entry, text))
                checks.append((name, check))
        return put, drop, checks

    def _row(self, adapter: TypeAdapter[Any], name: str, entry: str, value: Any) -> tuple[str, str]:
        """The row of one map entry, and what of it needs a check: all of it, but the
        records (RECORDS) it holds that were written already."""
        if not KEYED[name]:  # replaced, never changed: the same object, the same row
            known = self.replaced.get((name, entry))
            if known is None or known[0] is not value:
                row = adapter.dump_json({entry: value}, by_alias=True, exclude_none=True)
                known = self.replaced[name, entry] = (value, row.decode())
            return known[1], known[1]
        field_ = RECORDS.get(name)
        records = getattr(value, field_, None) if field_ else None
        if field_ is None or not isinstance(records, dict) or not records:
            self.parts.pop((name, entry), None)  # none kept for an account without any
            text = adapter.dump_json({entry: value}, by_alias=True, exclude_none=True).decode()
            return text, text
        parts = self._parts((name, entry))
        tags, texts = parts.encode(records)
        account = _joined(value, field_, partial(_dump, value))
        key = _key(entry)
        return f"{{{key}:{account(texts)}}}", f"{{{key}:{account(parts.fresh(tags))}}}"

    def _check_head(self, key: BudgetKey, status: BaseModel, names: list[str]) -> None:
        """The budget's row reads back: all of it but the entries it held before, which read
        back when they were read or were checked when they were written."""
        model = type(status)
        if not isinstance(status, Ledger):
            text = status.model_dump_json(by_alias=True, exclude_none=True, exclude=set(names))
            _check(key, model.model_validate_json, text)
            return
        text = status.model_dump_json(by_alias=True, exclude_none=True, exclude={*names, "entries"})
        _check(key, model.model_validate_json, text)
        parts = self._parts(("entries", ""))
        tags, _ = parts.encode(status.entries)
        fresh = [parts.texts[tag] for tag in set(tags).difference(self.held)]
        _check(key, _adapter(model, "entries").validate_json, f"[{','.join(fresh)}]")
        if len(status.entries) > ENTRIES_KEPT:
            raise InvalidCharge(
                f"{key}: more than {ENTRIES_KEPT} recent entries; nothing was written"
            )

    def wrote(self, found: Changes, status: BaseModel) -> None:
        """`found` is stored: what it put is what the rows now hold."""
        for name, entry, text in found.put:
            if KEYED[name]:
                self.written[(name, entry)] = text
        for name, entry in found.drop:
            self.written.pop((name, entry), None)
            self.parts.pop((name, entry), None)
        for name, entry, _ in found.put:
            parts = self.parts.get((name, entry))
            if parts is not None:
                parts.written = set(parts.pins)
        self.head = found.head
        self.moved = False
        self.track(status)

    def unchanged(self, budget: Budget) -> bool:
        """Whether `budget` still equals what is stored: a batch that wrote nothing (a
        replay, a dry run) may then keep it instead of reading it again."""
        found = self.changes(budget)
        same = not found.put and not found.drop and found.head == self.head
        if same:  # it is as stored: what the batch touched need not be looked at again
            self.track(budget.status)
        return same


def _check(key: BudgetKey, read: Callable[[str], object], text: str) -> None:
    """Raise InvalidCharge, naming the budget, unless `text` reads back with `read`."""
    try:
        read(text)
    except ValidationError as error:
        raise InvalidCharge(
            f"{key}: this change would leave a status that does not read back "
            f"({field_errors(error)[0]}); nothing was written"
        ) from error


Stored = tuple[str, str, str]
"""A map's row as stored: (map, key, row)."""


def read(head: str, rows: list[Stored]) -> tuple[dict[str, Any], Rows]:
    """The status as one document, from its row and its maps' rows, and `Rows` to track it
    with once parsed. A row that still holds entries of its maps inline (written before
    rows) is read as it is; a map's row wins over an inline entry. The maps' names are
    single words, so each is its own wire name."""
    status = json.loads(head)
    if not isinstance(status, dict):
        raise TypeError("a status is an object")
    found = Rows(moved=any(status.get(name) for name in KEYED))
    for name, key, row in rows:
        status.setdefault(name, {}).update(json.loads(row))
        if KEYED.get(name):
            found.written[(name, key)] = row
    return status, found
