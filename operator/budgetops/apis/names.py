"""Names and keys that come from outside, and how they are shown. Pure.

Account names (rendered from usernames, groups and namespaces), object uids, release ids,
lease ids, holder ids and request ids end up in a ledger, in its audit trail and on a
terminal. One rule decides which of them a ledger takes: every character printable in
Python's sense (`str.isprintable`), which refuses control characters (escape sequences
included), format characters (bidirectional overrides, zero-width joiners), lone
surrogates (which no UTF-8 file or JSON string can hold), private-use, unassigned and
separator characters other than the ASCII space. Letters of any script are taken, so a
name can look like another (Cyrillic U+0430 beside Latin `a`): `shown` prints every
character outside printable ASCII as an escape, so two such names never look alike.
"""

from __future__ import annotations


def name_problem(text: str, limit: int) -> str | None:
    """What keeps `text` from being stored as a name or key (at most `limit` characters),
    worded to follow "the account ..."; None when it may be stored. Empty is for the
    caller to refuse where it matters."""
    if len(text) > limit:
        return f"is {len(text)} characters long; at most {limit} fit"
    return unprintable(text)


def unprintable(text: str) -> str | None:
    """Why `text` (any text from outside: a name, a key, a reason) is not stored or shown
    as it is, worded to follow its name; None when every character is printable."""
    if text.isprintable():
        return None
    bad = next(c for c in text if not c.isprintable())
    return (
        f"{shown(text)} holds the character {shown(bad)}, which BudgetOps does not take: "
        "it stores printable characters only (no control, format or surrogate characters)"
    )


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: str) -> str:
    """`text` as a terminal should print it: printable ASCII as it is, every other
    character (and the backslash) as a Python-style escape, so nothing in a name is
    interpreted by the terminal and names that merely look alike print differently."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(c if " " <= c <= "~" and c != "\\" else _escape(c) for c in text)
