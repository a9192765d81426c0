"""Agent identity tokens: what verification accepts, and a clear refusal for everything else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetops.crypto import tokens
from budgetops.crypto.tokens import (
    AgentClaims,
    InvalidToken,
    issue,
    new_agent_id,
    new_budget_id,
    new_signing_key,
    new_token_id,
    verify,
)

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
        ({"token_id": ""}, "^token_id must be 1 to 64 characters of a-z0-9$"),
        ({"token_id": "a" * 65}, "token_id must be 1 to 64 characters"),
        ({"token_id": 12}, "token_id must be 1 to 64 characters"),
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


# --- more cases, checked against the doc and RFC 7515/7519 rather than the module's constants --
# The independent HS256 below (hmac, hashlib, base64url) is anchored to RFC 7515 appendix A.1.

WRONG_KEY = bytes(range(100, 132))
LONG_KEY = bytes(range(64))  # long enough for HS384 and HS512 without a key-length warning
ISSUER = "budgetops.dev"
AT = datetime(2026, 1, 1, 15, 30, tzinfo=UTC)
AT_S = int(AT.timestamp())

# The documented id shapes (docs/lease-api.md), written here rather than imported.
DOC_AGENT_ID = re.compile(r"agent_[a-z0-9]{6,32}")
DOC_BUDGET_ID = re.compile(r"budget-[a-z0-9]{6,32}")
HEX_TOKEN_ID = re.compile(r"[a-z0-9]{1,64}")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- an independent HS256 (RFC 7515 section 3 and appendix A.1, RFC 7519 section 7) ---------


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hs256(signing_input: bytes, key: bytes) -> str:
    return b64url(hmac.new(key, signing_input, hashlib.sha256).digest())


def sign_segments(header_segment: str, payload_segment: str, key: bytes = KEY) -> str:
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    return f"{header_segment}.{payload_segment}.{hs256(signing_input, key)}"


def build(
    payload: Any, *, key: bytes = KEY, header: dict[str, Any] | None = None, raw: bool = False
) -> str:
    """A compact JWS built by hand; `raw` takes the payload as bytes already."""
    header = {"alg": "HS256", "typ": "JWT"} if header is None else header
    body = payload if raw else json.dumps(payload).encode()
    return sign_segments(b64url(json.dumps(header).encode()), b64url(body), key)


def independent_verify(token: str, key: bytes) -> dict[str, Any]:
    header_segment, payload_segment, signature = token.split(".")
    header = json.loads(b64url_decode(header_segment))
    assert header["alg"] == "HS256"
    expected = hs256(f"{header_segment}.{payload_segment}".encode("ascii"), key)
    assert hmac.compare_digest(expected, signature), "signature does not match"
    payload: dict[str, Any] = json.loads(b64url_decode(payload_segment))
    return payload


def values_at(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "agent_id": "agent_0123456789abcdef0123456789abcdef",
        "budget_id": "budget-team42",
        "issued_at": AT_S - 60,
        "expires_at": AT_S + 3600,
        "issuer": ISSUER,
        "permissions": ["llm:call"],
        "token_id": "0f1e2d3c4b5a",
    }
    base.update(changes)
    return base


def claims_at(**changes: Any) -> AgentClaims:
    values = values_at(**changes)
    values["permissions"] = tuple(values["permissions"])
    return AgentClaims(**values)


def verify_at(token: str, *, key: bytes = KEY, issuer: str = ISSUER, now: datetime = AT) -> None:
    verify(token, key=key, issuer=issuer, now=now)


def refused(token: str, *, key: bytes = KEY, issuer: str = ISSUER, now: datetime = AT) -> str:
    """The message of the InvalidToken that verify raises; also checks that it is safe."""
    with pytest.raises(InvalidToken) as caught:
        verify(token, key=key, issuer=issuer, now=now)
    message = str(caught.value)
    assert message
    assert_safe(message, token, key)
    return message


def assert_safe(message: str, token: str, key: bytes) -> None:
    if len(token) >= 16:
        assert token not in message
        for segment in token.split("."):
            if len(segment) >= 16:
                assert segment not in message
    for shown in (key.hex(), b64url(key), base64.b64encode(key).decode(), repr(key)):
        assert shown not in message
    assert key.decode("latin-1") not in message


# --- the independent code is right --------------------------------------------------------


def test_independent_hs256_matches_rfc7515_appendix_a1() -> None:
    key = b64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
    )
    header_segment = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    payload_segment = (
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxl"
        "LmNvbS9pc19yb290Ijp0cnVlfQ"
    )
    assert b64url_decode(header_segment) == b'{"typ":"JWT",\r\n "alg":"HS256"}'
    token = sign_segments(header_segment, payload_segment, key)
    assert token.rsplit(".", 1)[1] == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    # verify accepts the RFC's signature: the refusal is about the claims, not the signature.
    message = refused(token, key=key)
    assert "agent_id" in message
    assert "signature" not in message


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("expires_at", [AT_S + 3600, None])
@pytest.mark.parametrize("permissions", [(), ("llm:call",), ("llm:call", "lease:read", "é")])
def test_round_trip(expires_at: int | None, permissions: tuple[str, ...]) -> None:
    original = claims_at(expires_at=expires_at, permissions=permissions)
    token = issue(original, key=KEY)
    got = verify(token, key=KEY, issuer=ISSUER, now=AT)
    assert got == original
    assert isinstance(got.permissions, tuple)


def test_round_trip_with_new_ids_and_key() -> None:
    key = new_signing_key()
    original = claims_at(
        agent_id=new_agent_id(), budget_id=new_budget_id(), token_id=new_token_id()
    )
    assert verify(issue(original, key=key), key=key, issuer=ISSUER, now=AT) == original


def test_issued_token_verifies_with_independent_hs256() -> None:
    token = issue(claims_at(), key=KEY)
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header["alg"] == "HS256"
    assert independent_verify(token, KEY) == values_at()
    with pytest.raises(AssertionError, match="signature does not match"):
        independent_verify(token, WRONG_KEY)


@pytest.mark.parametrize(
    "header", [{"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"}, {"typ": "JWT", "alg": "HS256"}]
)
def test_independently_built_token_verifies(header: dict[str, Any]) -> None:
    token = build(values_at(), header=header)
    assert verify(token, key=KEY, issuer=ISSUER, now=AT) == claims_at()


def test_custom_issuer() -> None:
    token = build(values_at(issuer="example.org"))
    assert verify(token, key=KEY, issuer="example.org", now=AT).issuer == "example.org"
    assert "issued by" in refused(token, issuer=ISSUER)


# --- the algorithm is pinned --------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    header_segment = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload_segment = b64url(json.dumps(values_at()).encode())
    message = refused(f"{header_segment}.{payload_segment}.")
    assert "only HS256" in message
    assert alg in message


def test_alg_none_with_a_valid_hs256_signature_is_still_refused() -> None:
    assert "only HS256" in refused(build(values_at(), header={"alg": "none"}))


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused(alg: str) -> None:
    token = jwt.encode(values_at(), LONG_KEY, algorithm=alg)
    assert jwt.get_unverified_header(token)["alg"] == alg
    message = refused(token, key=LONG_KEY)
    assert alg in message
    assert "only HS256" in message


def test_hs512_signature_under_an_hs256_header_is_refused() -> None:
    header_segment = b64url(b'{"alg":"HS256"}')
    payload_segment = b64url(json.dumps(values_at()).encode())
    signing_input = f"{header_segment}.{payload_segment}".encode()
    signature = b64url(hmac.new(KEY, signing_input, hashlib.sha512).digest())
    assert "signature" in refused(f"{header_segment}.{payload_segment}.{signature}")


@pytest.mark.parametrize(
    "header",
    [{}, {"typ": "JWT"}, {"alg": None}, {"alg": 256}, {"alg": ["HS256"]}, {"alg": "hs256"}],
)
def test_missing_or_odd_alg_is_refused(header: dict[str, Any]) -> None:
    assert "only HS256" in refused(build(values_at(), header=header))


@pytest.mark.parametrize(
    "header_bytes", [b"not json", b'["HS256"]', b'"HS256"', b"", b"{", b"\xff\xfe"]
)
def test_header_that_is_not_a_json_object(header_bytes: bytes) -> None:
    token = sign_segments(b64url(header_bytes), b64url(json.dumps(values_at()).encode()))
    assert refused(token) == "the token is not a JWT"


# --- signatures ---------------------------------------------------------------------------


def test_signed_with_another_key() -> None:
    assert refused(issue(claims_at(), key=WRONG_KEY)) == "the token's signature does not match"


def test_tampered_payload_is_refused() -> None:
    header_segment, _, signature = issue(claims_at(), key=KEY).split(".")
    forged = b64url(json.dumps(values_at(budget_id="budget-someoneelse")).encode())
    assert refused(f"{header_segment}.{forged}.{signature}") == (
        "the token's signature does not match"
    )


@pytest.mark.parametrize("position", [0, 10, -1])
def test_changed_signature_is_refused(position: int) -> None:
    head, signature = issue(claims_at(), key=KEY).rsplit(".", 1)
    raw = bytearray(b64url_decode(signature))
    raw[position] ^= 0x01
    refused(f"{head}.{b64url(bytes(raw))}")


def test_missing_signature_is_refused() -> None:
    head = issue(claims_at(), key=KEY).rsplit(".", 1)[0]
    refused(head + ".")
    refused(head)


# --- issuer and expiry --------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["evil.dev", "budgetops.dev ", "BUDGETOPS.DEV", ""])
def test_wrong_issuer(issuer: str) -> None:
    message = refused(build(values_at(issuer=issuer)))
    assert "issued by" in message
    assert ISSUER in message


@pytest.mark.parametrize("offset", [-86400, -1, 0])
def test_expired_at_or_before_now(offset: int) -> None:
    message = refused(build(values_at(expires_at=AT_S + offset)))
    assert "expired" in message
    shown = datetime.fromtimestamp(AT_S + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert shown in message


@pytest.mark.parametrize("offset", [1, 3600, 10 * 365 * 86400])
def test_future_expiry_is_accepted(offset: int) -> None:
    got = verify(build(values_at(expires_at=AT_S + offset)), key=KEY, issuer=ISSUER, now=AT)
    assert got.expires_at == AT_S + offset


def test_expiry_is_against_the_given_now() -> None:
    token = build(values_at(expires_at=AT_S + 10))
    verify_at(token, now=AT + timedelta(seconds=9))
    refused(token, now=AT + timedelta(seconds=10))


def test_null_expiry_lives_on() -> None:
    token = build(values_at(expires_at=None))
    far = datetime(9000, 1, 1, tzinfo=UTC)
    assert verify(token, key=KEY, issuer=ISSUER, now=far).expires_at is None


@pytest.mark.parametrize("expires_at", [10**30, -(10**30), 2**63])
def test_out_of_range_expiry_is_invalid_token(expires_at: int) -> None:
    refused(build(values_at(expires_at=expires_at)))


# --- claim formats ------------------------------------------------------------------------

BAD_IDS = [
    ("agent_id", "agent_abcde"),  # 5 characters
    ("agent_id", "agent_" + "a" * 33),
    ("agent_id", "agent_ABCDEF"),
    ("agent_id", "agent-abcdef"),
    ("agent_id", "Agent_abcdef"),
    ("agent_id", "agent_abc def"),
    ("agent_id", "agent_abcdef\n"),
    ("agent_id", " agent_abcdef"),
    ("agent_id", "agent_abcdé1"),
    ("agent_id", ""),
    ("budget_id", "budget_abcdef"),
    ("budget_id", "budget-abc"),
    ("budget_id", "budget-" + "a" * 33),
    ("budget_id", "budget-abc_def"),
    ("budget_id", "budget-abcdef\n"),
    ("token_id", ""),
    ("token_id", "a" * 65),
]
GOOD_IDS = [
    ("agent_id", "agent_abc123"),
    ("agent_id", "agent_" + "z9" * 16),
    ("budget_id", "budget-000000"),
    ("budget_id", "budget-" + "a" * 32),
    ("token_id", "0"),
    ("token_id", "a" * 64),
]


@pytest.mark.parametrize(("name", "value"), BAD_IDS)
def test_malformed_ids_are_refused(name: str, value: str) -> None:
    assert name in refused(build(values_at(**{name: value})))
    with pytest.raises(ValueError, match=name):
        issue(claims_at(**{name: value}), key=KEY)


@pytest.mark.parametrize(("name", "value"), GOOD_IDS)
def test_ids_at_the_bounds_are_accepted(name: str, value: str) -> None:
    got = verify(build(values_at(**{name: value})), key=KEY, issuer=ISSUER, now=AT)
    assert getattr(got, name) == value


@pytest.mark.parametrize(
    "name",
    ["agent_id", "budget_id", "issued_at", "expires_at", "issuer", "permissions", "token_id"],
)
def test_missing_claims_are_refused(name: str) -> None:
    values = values_at()
    del values[name]
    assert name in refused(build(values))


WRONG_TYPES = [
    ("agent_id", 12345678),
    ("budget_id", None),
    ("token_id", 7),
    ("issued_at", True),
    ("issued_at", False),
    ("issued_at", "1767281400"),
    ("issued_at", 1.5),
    ("issued_at", None),
    ("expires_at", "2030-01-01T00:00:00Z"),
    ("expires_at", str(AT_S + 3600)),
    ("expires_at", True),
    ("expires_at", 1.0e10),
    ("expires_at", [AT_S + 3600]),
    ("issuer", None),
    ("issuer", ["budgetops.dev"]),
    ("permissions", "llm:call"),
    ("permissions", None),
    ("permissions", [1]),
    ("permissions", ["llm:call", None]),
    ("permissions", [["llm:call"]]),
    ("permissions", {"llm:call": True}),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_wrong_claim_types_are_refused(name: str, value: Any) -> None:
    assert name in refused(build(values_at(**{name: value})))


# AgentClaims.permissions is a tuple: to_payload() turns any iterable into a list, so a str or
# a dict given there is not a wrong type that issue() can see (see the report).
ISSUE_WRONG_TYPES = [
    *((name, value) for name, value in WRONG_TYPES if name != "permissions"),
    ("permissions", (1,)),
    ("permissions", ("llm:call", None)),
    ("permissions", (b"llm:call",)),
]


@pytest.mark.parametrize(("name", "value"), ISSUE_WRONG_TYPES)
def test_issue_refuses_wrong_claim_types(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        issue(AgentClaims(**values_at(**{name: value})), key=KEY)


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"claims"', b"42", b"null", b"not json", b"\xff", b""]
)
def test_signed_payload_that_is_not_an_object(body: bytes) -> None:
    refused(build(body, raw=True))


def test_extra_claims_are_ignored() -> None:
    token = build({**values_at(), "sub": "x", "exp": AT_S - 10**6, "iss": "evil.dev"})
    assert verify(token, key=KEY, issuer=ISSUER, now=AT) == claims_at()


# --- size ---------------------------------------------------------------------------------


def sized_token(length: int) -> str:
    """A valid token of exactly `length` characters, padded with a permission."""
    for header in (
        {"alg": "HS256"},
        {"alg": "HS256", "typ": "JWT"},
        {"typ": "JWT", "alg": "HS256"},
    ):
        for pad in range(max(0, length * 3 // 4 - 400), length):
            token = build(values_at(permissions=["llm:call", "x" * pad]), header=header)
            if len(token) == length:
                return token
            if len(token) > length:
                break
    raise AssertionError(f"no token of {length} characters")


def test_token_of_4096_bytes_is_accepted() -> None:
    token = sized_token(4096)
    assert len(token.encode()) == 4096
    verify_at(token)


def test_token_over_4096_bytes_is_refused() -> None:
    message = refused(sized_token(4097))
    assert "4096" in message
    assert "longer" in message


def test_length_is_counted_in_utf8_bytes() -> None:
    assert "longer than 4096" in refused("é" * 2049)  # 2049 characters, 4098 bytes


def test_empty_token() -> None:
    with pytest.raises(InvalidToken, match="empty"):
        verify("", key=KEY, issuer=ISSUER, now=AT)


@pytest.mark.parametrize(
    "token", ["abc", "a.b", "a.b.c", "a.b.c.d", "...", "eyJ.eyJ.", "é.é.é", "\x00.\x00.\x00"]
)
def test_garbage_is_not_a_jwt(token: str) -> None:
    refused(token)


# --- claims that are lone surrogates (valid JSON escapes, not UTF-8) ------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"issuer": "\ud800"},
        {"issuer": "budgetops.dev\udfff"},
        {"agent_id": "agent_\ud800abcdef"},
    ],
)
def test_lone_surrogate_claims_are_invalid_token(changes: dict[str, str]) -> None:
    token = build(values_at(**changes))  # json.dumps writes them as \udXXX escapes
    assert "\\ud" in b64url_decode(token.split(".")[1]).decode("ascii")
    with pytest.raises(InvalidToken):
        verify(token, key=KEY, issuer=ISSUER, now=AT)


# --- properties: only InvalidToken, never another exception -------------------------------

SEGMENT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=60
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def only_invalid_token(token: str, key: bytes = KEY) -> None:
    try:
        verify(token, key=key, issuer=ISSUER, now=AT)
    except InvalidToken as error:
        assert_safe(str(error), token, key)


@FAST
@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_any_text_raises_only_invalid_token(token: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify(token, key=KEY, issuer=ISSUER, now=AT)
    assert_safe(str(caught.value), token, KEY)


@FAST
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "latin-1"]))
def test_any_bytes_decoded_raise_only_invalid_token(data: bytes, codec: str) -> None:
    token = data.decode(codec, errors="surrogateescape" if codec == "utf-8" else "strict")
    with pytest.raises(InvalidToken):
        verify(token, key=KEY, issuer=ISSUER, now=AT)


@FAST
@given(SEGMENT, SEGMENT, SEGMENT, st.integers(1, 4))
def test_jwt_shaped_text_raises_only_invalid_token(a: str, b: str, c: str, dots: int) -> None:
    with pytest.raises(InvalidToken):
        verify(".".join([a, b, c, "x"][: dots + 1]), key=KEY, issuer=ISSUER, now=AT)


@FAST
@given(JSON_VALUES, JSON_VALUES)
def test_arbitrary_json_under_the_right_key_raises_only_invalid_token(
    header_extra: Any, body: Any
) -> None:
    only_invalid_token(build(body, header={"alg": "HS256", "x": header_extra}))


@FAST
@given(
    st.from_regex(DOC_AGENT_ID, fullmatch=True),
    st.from_regex(DOC_BUDGET_ID, fullmatch=True),
    st.from_regex(HEX_TOKEN_ID, fullmatch=True),
    st.lists(st.text(max_size=20), max_size=5),
    # Up to the skew the verifier allows ahead of its clock, and no further: past it the
    # token is refused (the property below), so drawing there made this test flaky.
    st.integers(-(2**40), AT_S + tokens.ISSUED_AHEAD_MAX),
)
def test_documented_claims_round_trip(
    agent_id: str, budget_id: str, token_id: str, permissions: list[str], issued_at: int
) -> None:
    original = claims_at(
        agent_id=agent_id,
        budget_id=budget_id,
        token_id=token_id,
        permissions=tuple(permissions),
        issued_at=issued_at,
    )
    token = issue(original, key=KEY)
    assert independent_verify(token, KEY)["agent_id"] == agent_id
    assert verify(token, key=KEY, issuer=ISSUER, now=AT) == original


@FAST
@given(st.integers(AT_S + tokens.ISSUED_AHEAD_MAX + 1, 2**40))
def test_issued_past_the_allowed_skew_is_refused(issued_at: int) -> None:
    token = issue(claims_at(issued_at=issued_at), key=KEY)
    assert refused(token) == "the token says it was issued in the future"


# --- new ids ----------------------------------------------------------------------------


def test_new_ids_match_the_documented_patterns() -> None:
    agents = {new_agent_id() for _ in range(50)}
    budgets = {new_budget_id() for _ in range(50)}
    token_ids = {new_token_id() for _ in range(50)}
    assert len(agents) == len(budgets) == len(token_ids) == 50
    for agent_id in agents:
        assert DOC_AGENT_ID.fullmatch(agent_id)
        assert re.fullmatch(r"agent_[0-9a-f]{32}", agent_id)  # the account name in the doc
    for budget_id in budgets:
        assert DOC_BUDGET_ID.fullmatch(budget_id)
    for token_id in token_ids:
        assert HEX_TOKEN_ID.fullmatch(token_id)


def test_new_signing_key() -> None:
    keys = {new_signing_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(isinstance(key, bytes) and len(key) == 32 for key in keys)


def test_a_token_id_the_agent_record_could_not_hold_is_refused() -> None:
    """A signed token_id of "\\ud800" passed verify, then crashed the constant-time compare
    with the agent's record (a 500 instead of a 401)."""
    claims = tokens.AgentClaims(
        agent_id="agent_abc123", budget_id="budget-abc123", issued_at=1, expires_at=None,
        issuer=tokens.DEFAULT_ISSUER, permissions=("llm:call",), token_id="abc",
    )  # fmt: skip
    key = b"k" * 32
    forged = jwt.encode(claims.to_payload() | {"token_id": "\ud800"}, key, algorithm="HS256")
    with pytest.raises(tokens.InvalidToken, match="token_id must be 1 to 64 characters"):
        tokens.verify(forged, key=key, issuer=tokens.DEFAULT_ISSUER, now=datetime.now(UTC))


@pytest.mark.parametrize("token", [b"eyJ", 42, None, ["a"]])
def test_a_token_that_is_not_text_is_an_invalid_token(token: Any) -> None:
    with pytest.raises(InvalidToken, match="the token must be text"):
        tokens.verify(token, key=KEY, issuer=tokens.DEFAULT_ISSUER, now=NOW)


def test_permissions_given_as_one_string_are_refused() -> None:
    with pytest.raises(TypeError, match="not one string"):
        replace(CLAIMS, permissions="llm:call")  # type: ignore[arg-type]


def test_a_token_issued_in_the_future_is_refused_beyond_clock_skew() -> None:
    ahead = int(NOW.timestamp()) + tokens.ISSUED_AHEAD_MAX
    assert check(tokens.issue(replace(CLAIMS, issued_at=ahead), key=KEY)).issued_at == ahead
    future = tokens.issue(replace(CLAIMS, issued_at=ahead + 1), key=KEY)
    with pytest.raises(InvalidToken, match="issued in the future"):
        check(future)
