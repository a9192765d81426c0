"""Agent identity tokens: what verification accepts, and a clear refusal for everything else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetops.crypto import tokens
from budgetops.crypto.tokens import AgentClaims, InvalidToken

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ISSUED = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())
CLAIMS = AgentClaims(
    agent_id="agent_0123456789abcdef0123456789abcdef",
    budget_id="budget-0123456789abcdef0123456789abcdef",
    issued_at=ISSUED,
    expires_at=int(datetime(2026, 7, 1, tzinfo=UTC).timestamp()),
    issuer=tokens.DEFAULT_ISSUER,
    permissions=("llm:call",),
    token_id="0123456789abcdef0123456789abcdef",
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: object, key: bytes | None = KEY) -> str:
    """A JWT built without pyjwt, so the test is not limited to what pyjwt would write."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if key is None:
        return f"{signing_input}."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def check(token: str, *, issuer: str = tokens.DEFAULT_ISSUER) -> AgentClaims:
    return tokens.verify(token, key=KEY, issuer=issuer, now=NOW)


def payload(**changes: object) -> dict[str, Any]:
    return {**CLAIMS.to_payload(), **changes}


def test_an_issued_token_verifies_to_its_claims() -> None:
    assert check(tokens.issue(CLAIMS, key=KEY)) == CLAIMS


def test_the_payload_carries_the_protocols_claim_names() -> None:
    token = tokens.issue(replace(CLAIMS, expires_at=None), key=KEY)
    decoded = jwt.decode(token, KEY, algorithms=["HS256"])
    assert decoded == {**payload(expires_at=None), "permissions": ["llm:call"]}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_a_token_without_expiry_is_accepted() -> None:
    claims = replace(CLAIMS, expires_at=None)
    assert check(tokens.issue(claims, key=KEY)) == claims


def test_a_handmade_hs256_token_verifies() -> None:
    assert check(handmade({"alg": "HS256", "typ": "JWT"}, payload())) == CLAIMS


def test_alg_none_is_refused_before_anything_else() -> None:
    with pytest.raises(InvalidToken, match=r"^the token is signed with none; only HS256"):
        check(handmade({"alg": "none", "typ": "JWT"}, payload(), key=None))


@pytest.mark.parametrize("algorithm", ["HS512", "RS256", "ES256", "PS256"])
def test_any_other_algorithm_is_refused(algorithm: str) -> None:
    with pytest.raises(InvalidToken, match=rf"^the token is signed with {algorithm}; only HS256"):
        check(handmade({"alg": algorithm}, payload()))


def test_hs512_signed_with_the_right_key_is_still_refused() -> None:
    token = jwt.encode(payload(), KEY + KEY, algorithm="HS512")
    with pytest.raises(InvalidToken, match=r"signed with HS512; only HS256 is accepted"):
        check(token)


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ({}, "no algorithm"),
        ({"alg": ["HS256"]}, "a JSON list"),
        ({"alg": "HS\n256"}, r"'HS\\n256'"),
    ],
)
def test_an_odd_alg_is_named_without_echoing_control_characters(
    header: dict[str, Any], shown: str
) -> None:
    with pytest.raises(InvalidToken, match=f"signed with {shown}; only HS256") as caught:
        check(handmade(header, payload()))
    assert "\n" not in str(caught.value)


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = tokens.issue(CLAIMS, key=OTHER_KEY)
    with pytest.raises(InvalidToken, match=r"^the token's signature does not match$") as caught:
        check(token)
    assert token not in str(caught.value)
    assert KEY.hex() not in str(caught.value)


def test_a_changed_payload_breaks_the_signature() -> None:
    header, _, signature = tokens.issue(CLAIMS, key=KEY).split(".")
    forged = f"{header}.{b64url(json.dumps(payload(permissions=['admin'])).encode())}.{signature}"
    with pytest.raises(InvalidToken, match=r"signature does not match"):
        check(forged)


def test_another_issuer_is_refused() -> None:
    token = tokens.issue(replace(CLAIMS, issuer="evil.example"), key=KEY)
    with pytest.raises(
        InvalidToken, match=r"^the token was issued by 'evil.example', not 'budgetops.dev'$"
    ):
        check(token)
    assert check(token, issuer="evil.example").issuer == "evil.example"


def test_an_expired_token_is_refused_with_when() -> None:
    token = tokens.issue(replace(CLAIMS, expires_at=int(NOW.timestamp()) - 1), key=KEY)
    with pytest.raises(InvalidToken, match=r"^the token expired at 2026-06-01T11:59:59Z$"):
        check(token)


def test_a_token_expiring_now_is_already_expired() -> None:
    with pytest.raises(InvalidToken, match=r"expired at 2026-06-01T12:00:00Z"):
        check(tokens.issue(replace(CLAIMS, expires_at=int(NOW.timestamp())), key=KEY))


def test_an_expiry_beyond_any_date_is_refused() -> None:
    with pytest.raises(InvalidToken, match=r"^expires_at is out of range$"):
        check(handmade({"alg": "HS256"}, payload(expires_at=10**30)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agent_id": "agent_ABCDEF"}, "agent_id 'agent_ABCDEF' is not of the form agent_<6-32"),
        ({"agent_id": "agent_abc"}, "agent_id 'agent_abc' is not of the form"),
        ({"agent_id": "agent-abcdef"}, "agent_id 'agent-abcdef' is not of the form"),
        ({"agent_id": "agent_" + "a" * 33}, "is not of the form agent_<6-32 of a-z0-9>"),
        ({"agent_id": "agent_abcdef\n"}, r"agent_id 'agent_abcdef\\n' is not of the form"),
        ({"budget_id": "budget_abcdef"}, "budget_id 'budget_abcdef' is not of the form budget-"),
        ({"agent_id": 7}, "^agent_id must be a string$"),
        ({"token_id": ""}, "^token_id must be a string of 1 to 64 characters$"),
        ({"token_id": "a" * 65}, "token_id must be a string of 1 to 64"),
        ({"token_id": 12}, "token_id must be a string of 1 to 64"),
        ({"issued_at": True}, r"^issued_at must be Unix seconds \(an integer\)$"),
        ({"issued_at": 1.5}, "issued_at must be Unix seconds"),
        ({"issued_at": "1767225600"}, "issued_at must be Unix seconds"),
        ({"expires_at": "never"}, r"^expires_at must be Unix seconds \(an integer\) or null$"),
        ({"expires_at": False}, "expires_at must be Unix seconds"),
        ({"issuer": None}, "^issuer must be a string$"),
        ({"permissions": "llm:call"}, "^permissions must be a list of strings$"),
        ({"permissions": ["llm:call", 1]}, "permissions must be a list of strings"),
    ],
)
def test_malformed_claims_are_refused_each_with_its_reason(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidToken, match=message):
        check(handmade({"alg": "HS256"}, payload(**changes)))


@pytest.mark.parametrize("name", list(CLAIMS.to_payload()))
def test_a_missing_claim_is_named(name: str) -> None:
    claims = payload()
    del claims[name]
    with pytest.raises(InvalidToken, match=f"^the token has no {name} claim$"):
        check(handmade({"alg": "HS256"}, claims))


def test_extra_claims_are_ignored_and_pyjwt_checks_none_of_its_own() -> None:
    extra = payload(exp=1, iat="x", nbf=10**12, iss=5, aud=[1], sub=2, jti=3)
    assert check(handmade({"alg": "HS256"}, extra)) == CLAIMS


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidToken, match=r"^the token is not a JWT$"):
        check(handmade({"alg": "HS256"}, ["agent_abcdef"]))


def test_an_overlong_token_is_refused_before_parsing() -> None:
    token = tokens.issue(replace(CLAIMS, permissions=("p" * 4096,)), key=KEY)
    with pytest.raises(InvalidToken, match=r"^the token is longer than 4096 bytes$"):
        check(token)
    with pytest.raises(InvalidToken, match=r"longer than 4096 bytes"):
        check("é" * 2049)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a token",
        "a.b",
        "a.b.c",
        "...",
        "eyJ.eyJ.",
        f"{b64url(b'[1]')}.{b64url(b'{}')}.",
        f"{b64url(b'{')}.{b64url(b'{}')}.",
        f"{b64url(bytes([0xFF, 0xFE]))}.e30.",
        f"{b64url(b'[' * 2000)}.e30.",
        "\ud800.e30.",
        f"{b64url(json.dumps({'alg': 'HS256', 'kid': 1}).encode())}.e30.",
        f"{b64url(json.dumps({'alg': 'HS256', 'b64': False}).encode())}.e30.",
    ],
)
def test_garbage_is_refused_as_not_a_jwt(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        check(garbage)


@given(st.text(alphabet=st.characters(exclude_categories=())))
def test_any_text_is_only_ever_an_invalid_token(text: str) -> None:
    with pytest.raises(InvalidToken):
        check(text)


segment = st.one_of(
    st.binary(max_size=60).map(b64url),
    st.text(alphabet="ABCDEFabcdef0123456789-_=+/.", max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(header=json_values | st.fixed_dictionaries({"alg": json_values}), body=segment)
def test_jwt_shaped_garbage_is_only_ever_an_invalid_token(header: object, body: str) -> None:
    with pytest.raises(InvalidToken):
        check(f"{b64url(json.dumps(header).encode())}.{body}.{body}")


@given(
    st.dictionaries(
        st.sampled_from([*CLAIMS.to_payload(), "exp", "sub"]),
        json_values,
    ),
)
def test_any_signed_payload_is_claims_or_an_invalid_token(changes: dict[str, object]) -> None:
    try:
        claims = check(handmade({"alg": "HS256"}, payload(**changes)))
    except InvalidToken:
        return
    assert claims.to_payload() == {
        name: changes.get(name, value) for name, value in CLAIMS.to_payload().items()
    }


@pytest.mark.parametrize(
    "bad",
    [
        replace(CLAIMS, agent_id="agent_X"),
        replace(CLAIMS, budget_id="budget_abcdef"),
        replace(CLAIMS, token_id=""),
        replace(CLAIMS, issued_at=True),
        replace(CLAIMS, permissions=(1,)),  # type: ignore[arg-type]
    ],
)
def test_issue_refuses_claims_verify_would_refuse(bad: AgentClaims) -> None:
    with pytest.raises(ValueError, match=r"must be|is not of the form") as caught:
        tokens.issue(bad, key=KEY)
    assert not isinstance(caught.value, InvalidToken)


def test_new_ids_are_of_their_forms_and_fresh() -> None:
    assert tokens.AGENT_ID.fullmatch(tokens.new_agent_id())
    assert tokens.BUDGET_ID.fullmatch(tokens.new_budget_id())
    assert len(tokens.new_token_id()) == 32
    assert tokens.new_token_id() != tokens.new_token_id()
    assert len(tokens.new_signing_key()) == 32
    assert tokens.new_signing_key() != tokens.new_signing_key()


def test_fresh_ids_make_a_token_that_verifies() -> None:
    claims = replace(
        CLAIMS,
        agent_id=tokens.new_agent_id(),
        budget_id=tokens.new_budget_id(),
        token_id=tokens.new_token_id(),
    )
    key = tokens.new_signing_key()
    assert tokens.verify(tokens.issue(claims, key=key), key=key, issuer=claims.issuer, now=NOW)


def test_same_token_id() -> None:
    assert tokens.same_token_id(CLAIMS.token_id, "0123456789abcdef0123456789abcdef")
    assert not tokens.same_token_id(CLAIMS.token_id, tokens.new_token_id())
    assert not tokens.same_token_id("abc", "abcd")
    assert tokens.same_token_id("é", "é")
