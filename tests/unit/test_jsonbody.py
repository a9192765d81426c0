"""The bounded JSON reader: exactly where its bounds lie (the server's tests show what a
caller answers when they are crossed)."""

from __future__ import annotations

import pytest

from budgetops.apis.jsonbody import MAX_DEPTH, NUMBER_CHARS, JsonError, read_json


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_is_bounded_at_max_depth_whatever_the_stack(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    assert read_json(opening * MAX_DEPTH + "1" + closing * MAX_DEPTH) is not None
    deeper = opening * (MAX_DEPTH + 1) + "1" + closing * (MAX_DEPTH + 1)
    with pytest.raises(JsonError, match=f"nests more than {MAX_DEPTH} levels") as caught:
        read_json(deeper)
    assert caught.value.document is not None, "parsed: a caller can still read the uid"


def test_numbers_are_bounded_in_length_and_range_and_the_document_is_kept() -> None:
    assert read_json(f'{{"n": {"9" * NUMBER_CHARS}, "f": -1.5e300}}') == {
        "n": int("9" * NUMBER_CHARS),
        "f": -1.5e300,
    }
    for text, says in (
        ("9" * (NUMBER_CHARS + 1), f"{NUMBER_CHARS + 1} characters"),
        ("-1e400", "-1e400, a number out of range"),
        ("Infinity", "Infinity is not a number JSON allows"),
    ):
        with pytest.raises(JsonError, match=says) as caught:
            read_json(f'{{"uid": "u", "n": [{text}]}}')
        assert caught.value.document == {"uid": "u", "n": [None]}


@pytest.mark.parametrize("body", [b"{", b"\xff", b"[" * 100_000])
def test_what_does_not_parse_has_no_document(body: bytes) -> None:
    with pytest.raises(JsonError) as caught:
        read_json(body)
    assert caught.value.document is None
