"""DSSE envelopes for signed verdicts (github.com/secure-systems-lab/dsse, protocol.md v1).

The anchors are outside the code under test: PAE bytes written from the spec, the spec's own
ECDSA test vector, RFC 8032's first Ed25519 vector, a verifier written here from protocol.md
(standard library base64, cryptography's keys used directly), and a fixed Ed25519 signature
computed once with raw cryptography over hand-built PAE bytes.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetops.crypto import dsse
from budgetops.crypto.dsse import (
    PAYLOAD_TYPE,
    BadSignature,
    Envelope,
    InvalidEnvelope,
    Keyring,
    Signature,
    SigningKey,
    VerifyKey,
    key_id,
    pae,
    sign,
    verify,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VERDICT = b'{"budget":"team-a","decision":"deny","reason":"over budget"}'

# The fixed vector: seed and payload chosen here; the signature and the key id computed once
# with cryptography directly (Ed25519PrivateKey.sign over the PAE bytes as spelt out in
# spec_pae, sha256 over the SPKI DER), never through dsse.
SEED = bytes(range(32))
SEED_SIG = (
    "e7cd0bc43d935e4331240712677b35757592b3bd60f81cb1a51109eaf4068f09"
    "b84e80ea0782e5a2f58c5aa5ad0791db226127e3c52b9fd6f7ae2ee8dc17f601"
)
SEED_KEYID = "sha256:a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"

# protocol.md, "Test Vectors": ECDSA P-256 with SHA-256, the signature as raw r || s.
SPEC_D = 97358161215184420915383655311931858321456579547487070936769975997791359926199
SPEC_DOCUMENT: dict[str, Any] = {
    "payload": "aGVsbG8gd29ybGQ=",
    "payloadType": "http://example.com/HelloWorld",
    "signatures": [
        {
            "sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfU"
            "iHqJPcIAriEGAHTVeCUjW2JIZA=="
        }
    ],
}

# RFC 8032, section 7.1, TEST 1 (the empty message).
RFC8032_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

ED = SigningKey.generate("ed25519")
EC = SigningKey.generate("ecdsa-p256")
OTHER = SigningKey.generate("ed25519")


def pkcs8(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def spki(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spec_pae(payload_type: bytes, body: bytes) -> bytes:
    """protocol.md: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal."""
    return b"".join(
        [
            b"DSSEv1",
            b" ",
            str(len(payload_type)).encode("ascii"),
            b" ",
            payload_type,
            b" ",
            str(len(body)).encode("ascii"),
            b" ",
            body,
        ]
    )


def spec_verify(document: dict[str, Any], public_pem: bytes) -> bool:
    """The spec's verification from protocol.md and envelope.md alone, not through dsse."""
    body = base64.b64decode(document["payload"], validate=True)
    signed = spec_pae(document["payloadType"].encode("utf-8"), body)
    key = serialization.load_pem_public_key(public_pem)
    for entry in document["signatures"]:
        sig = base64.b64decode(entry["sig"], validate=True)
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(sig, signed)
            else:
                assert isinstance(key, ec.EllipticCurvePublicKey)
                key.verify(sig, signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return True
    return False


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def message(error: pytest.ExceptionInfo[BaseException]) -> str:
    return str(error.value)


def exactly(text: str) -> str:
    """A `match` pattern for exactly this message."""
    return f"^{re.escape(text)}$"


# PAE


def test_pae_is_the_specs_example_byte_for_byte() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_of_empty_type_and_body() -> None:
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_pae_counts_bytes_not_characters() -> None:
    # "tÿpe" is 4 characters and 5 UTF-8 bytes; the body is 1 byte, not valid UTF-8.
    assert pae("t\u00ffpe", b"\xff") == b"DSSEv1 5 t\xc3\xbfpe 1 \xff"
    assert pae("\u20ac", b"\xe2\x82\xac") == b"DSSEv1 3 \xe2\x82\xac 3 \xe2\x82\xac"


@FAST
@given(st.text(), st.binary())
def test_pae_agrees_with_the_spec_for_any_type_and_body(payload_type: str, body: bytes) -> None:
    assert pae(payload_type, body) == spec_pae(payload_type.encode("utf-8"), body)


def test_the_specs_ecdsa_vector_verifies_over_our_pae() -> None:
    public = ec.derive_private_key(SPEC_D, ec.SECP256R1()).public_key()
    raw = base64.b64decode(SPEC_DOCUMENT["signatures"][0]["sig"])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(
        der, pae("http://example.com/HelloWorld", b"hello world"), ec.ECDSA(hashes.SHA256())
    )
    # The spec's document parses (its signature has no keyid); with the signature in DER, as
    # this module's ECDSA keys use, verify tries it against every key and names the one that held.
    parsed = Envelope.from_json(SPEC_DOCUMENT)
    assert parsed.signatures == (Signature("", raw),)
    as_der = Envelope(parsed.payload_type, parsed.payload, (Signature("", der),))
    known = VerifyKey(public)
    assert verify(as_der, [OTHER.public, known]) == known.keyid
    with pytest.raises(BadSignature):
        verify(parsed, [known])  # raw r || s is not the DER this module agreed on


# The independent verifier, fixed vectors and key ids


@pytest.mark.parametrize(
    "key", [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())]
)
def test_a_signed_verdict_verifies_with_the_specs_verifier(key: PrivateKeyTypes) -> None:
    signer = SigningKey.from_pem(pkcs8(key))
    document = json.loads(json.dumps(sign(VERDICT, signer).to_json()))
    assert spec_verify(document, spki(key))
    assert base64.b64decode(document["payload"], validate=True) == VERDICT
    assert document["payloadType"] == PAYLOAD_TYPE
    assert [entry["keyid"] for entry in document["signatures"]] == [signer.keyid]
    # The verifier is not vacuous: the same document with another type or body fails it.
    assert not spec_verify({**document, "payloadType": "application/json"}, spki(key))
    tampered = base64.b64encode(VERDICT.replace(b"deny", b"allo")).decode()
    assert not spec_verify({**document, "payload": tampered}, spki(key))


def test_the_fixed_ed25519_vector() -> None:
    signer = SigningKey.from_pem(pkcs8(ed25519.Ed25519PrivateKey.from_private_bytes(SEED)))
    envelope = sign(VERDICT, signer)
    assert envelope.to_json() == {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(VERDICT).decode(),
        "signatures": [
            {"keyid": SEED_KEYID, "sig": base64.b64encode(bytes.fromhex(SEED_SIG)).decode()}
        ],
    }
    assert verify(Envelope.from_json(envelope.to_json()), [signer.public]) == SEED_KEYID


def test_ed25519_signs_as_rfc_8032_says() -> None:
    secret = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))
    signer = SigningKey.from_pem(pkcs8(secret))
    assert signer.algorithm == "ed25519"
    assert signer.sign(b"").hex() == RFC8032_SIG
    assert signer.public.verify(bytes.fromhex(RFC8032_SIG), b"")


def test_ecdsa_signatures_are_der_over_sha256() -> None:
    sig = EC.sign(b"data")
    r, s = decode_dss_signature(sig)  # DER, not raw r || s
    assert encode_dss_signature(r, s) == sig
    public = serialization.load_pem_public_key(EC.public.to_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sig, b"data", ec.ECDSA(hashes.SHA256()))
    assert EC.algorithm == "ecdsa-p256"


@pytest.mark.parametrize("signer", [ED, EC], ids=["ed25519", "ecdsa-p256"])
def test_key_id_is_sha256_of_the_spki_der(signer: SigningKey) -> None:
    pem = signer.public.to_pem().decode()
    lines = pem.strip().splitlines()
    assert lines[0] == "-----BEGIN PUBLIC KEY-----"
    assert lines[-1] == "-----END PUBLIC KEY-----"
    der = base64.b64decode("".join(lines[1:-1]), validate=True)
    expected = "sha256:" + hashlib.sha256(der).hexdigest()
    assert signer.keyid == signer.public.keyid == expected
    assert key_id(serialization.load_pem_public_key(pem.encode())) == expected
    assert VerifyKey.from_pem(pem.encode()) == signer.public


def test_pem_round_trips() -> None:
    for signer in (ED, EC):
        again = SigningKey.from_pem(signer.to_pem())
        assert (again.keyid, again.algorithm) == (signer.keyid, signer.algorithm)
        assert signer.to_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert VerifyKey.from_pem(signer.public.to_pem()).keyid == signer.keyid
    assert "PRIVATE" not in repr(ED)


# Tampering and verification failures


@pytest.mark.parametrize("signer", [ED, EC], ids=["ed25519", "ecdsa-p256"])
def test_a_flipped_payload_byte_anywhere_is_refused(signer: SigningKey) -> None:
    envelope = sign(VERDICT, signer)
    for index in range(len(VERDICT)):
        tampered = Envelope(PAYLOAD_TYPE, flipped(VERDICT, index), envelope.signatures)
        with pytest.raises(BadSignature, match="does not verify"):
            verify(tampered, [signer.public])


@pytest.mark.parametrize("signer", [ED, EC], ids=["ed25519", "ecdsa-p256"])
def test_a_flipped_signature_byte_anywhere_is_refused(signer: SigningKey) -> None:
    envelope = sign(VERDICT, signer)
    (signature,) = envelope.signatures
    for index in range(len(signature.sig)):
        bad = Signature(signature.keyid, flipped(signature.sig, index))
        with pytest.raises(BadSignature) as error:
            verify(Envelope(PAYLOAD_TYPE, VERDICT, (bad,)), [signer.public])
        assert message(error) == f"the signature by key {signer.keyid!r} does not verify"


def test_a_signature_by_an_unknown_key_names_its_key_id() -> None:
    with pytest.raises(BadSignature) as error:
        verify(sign(VERDICT, OTHER), [ED.public, EC.public])
    assert message(error) == (
        f"no signature by a known key; the envelope's key ids: {OTHER.keyid!r}"
    )


def test_a_keyid_claiming_a_known_key_does_not_make_another_keys_signature_hold() -> None:
    forged = Signature(ED.keyid, OTHER.sign(pae(PAYLOAD_TYPE, VERDICT)))
    with pytest.raises(BadSignature) as error:
        verify(Envelope(PAYLOAD_TYPE, VERDICT, (forged,)), [ED.public, OTHER.public])
    assert message(error) == f"the signature by key {ED.keyid!r} does not verify"


def test_a_changed_payload_type_is_refused() -> None:
    envelope = sign(VERDICT, ED)
    for changed in ("application/json", "application/vnd.in-toto+jsoN", PAYLOAD_TYPE + " "):
        with pytest.raises(BadSignature, match="does not verify"):
            verify(Envelope(changed, VERDICT, envelope.signatures), [ED.public])


def test_a_pinned_payload_type_must_match() -> None:
    envelope = sign(VERDICT, ED, payload_type="application/vnd.budgetops.verdict+json")
    assert verify(envelope, [ED.public]) == ED.keyid
    assert verify(envelope, [ED.public], payload_type=envelope.payload_type) == ED.keyid
    with pytest.raises(BadSignature) as error:
        verify(envelope, [ED.public], payload_type=PAYLOAD_TYPE)
    assert message(error) == (
        "the payloadType is 'application/vnd.budgetops.verdict+json', "
        "not 'application/vnd.in-toto+json'"
    )


def test_a_signature_without_keyid_is_tried_against_every_key() -> None:
    (signature,) = sign(VERDICT, EC).signatures
    anonymous = Envelope(PAYLOAD_TYPE, VERDICT, (Signature("", signature.sig),))
    assert verify(anonymous, [ED.public, OTHER.public, EC.public]) == EC.keyid
    with pytest.raises(BadSignature) as error:
        verify(anonymous, [ED.public, OTHER.public])
    assert message(error) == "a signature without keyid verifies with none of the 2 known keys"


def test_the_first_signature_that_holds_wins() -> None:
    by_other = sign(VERDICT, OTHER).signatures
    by_ed = sign(VERDICT, ED).signatures
    by_ec = sign(VERDICT, EC).signatures
    envelope = Envelope(PAYLOAD_TYPE, VERDICT, by_other + by_ed + by_ec)
    assert verify(envelope, [EC.public, ED.public]) == ED.keyid
    assert verify(envelope, [EC.public]) == EC.keyid


def test_every_failing_signature_is_reported() -> None:
    bad = Signature(ED.keyid, b"\x00" * 64)
    envelope = Envelope(PAYLOAD_TYPE, VERDICT, (bad, *sign(VERDICT, OTHER).signatures))
    with pytest.raises(BadSignature) as error:
        verify(envelope, [ED.public])
    assert message(error) == f"the signature by key {ED.keyid!r} does not verify"


def test_no_keys_or_no_signatures() -> None:
    with pytest.raises(BadSignature) as error:
        verify(sign(VERDICT, ED), [])
    assert message(error) == "no verification keys are configured"
    with pytest.raises(BadSignature) as error:
        verify(Envelope(PAYLOAD_TYPE, VERDICT, ()), [ED.public])
    assert message(error) == "the envelope has no signatures"


@FAST
@given(st.binary(max_size=100))
def test_verify_key_never_raises_on_bad_signature_bytes(sig: bytes) -> None:
    assert not ED.public.verify(sig, b"data")
    assert not EC.public.verify(sig, b"data")


# Malformed documents

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
BASE64_ISH = st.one_of(
    st.text(alphabet="AQgw+/-_=", max_size=12),
    st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=24).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)
NEAR_SIGNATURE = st.dictionaries(
    st.sampled_from(["keyid", "sig", "Sig"]), JSON_VALUES | BASE64_ISH, max_size=3
)
NEAR_ENVELOPE = st.dictionaries(
    st.sampled_from(["payloadType", "payload", "signatures", "signature"]),
    JSON_VALUES | BASE64_ISH | st.lists(NEAR_SIGNATURE | JSON_VALUES, max_size=3),
    max_size=4,
)


def parses_or_is_invalid(document: object) -> None:
    try:
        envelope = Envelope.from_json(document)
    except InvalidEnvelope:
        return
    assert Envelope.from_json(json.loads(json.dumps(envelope.to_json()))) == envelope


@FAST
@given(JSON_VALUES)
def test_arbitrary_json_raises_only_invalid_envelope(document: object) -> None:
    parses_or_is_invalid(document)


@FAST
@given(NEAR_ENVELOPE)
def test_near_envelopes_raise_only_invalid_envelope(document: object) -> None:
    parses_or_is_invalid(document)


GOOD = sign(VERDICT, ED).to_json()
GOOD_SIG = GOOD["signatures"][0]


def changed(**fields: object) -> dict[str, Any]:
    return {**GOOD, **fields}


def without(name: str) -> dict[str, Any]:
    return {key: value for key, value in GOOD.items() if key != name}


NUMBERED_KEY: dict[object, object] = {1: 2}
NUMBERED_KEY.update((name, value) for name, value in GOOD.items())


def with_signature(**fields: object) -> dict[str, Any]:
    return changed(signatures=[{**GOOD_SIG, **fields}])


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (None, "the envelope is null, not an object"),
        ([GOOD], "the envelope is an array, not an object"),
        (json.dumps(GOOD), "the envelope is a string, not an object"),
        (without("payload"), "payload is missing"),
        (without("payloadType"), "payloadType is missing"),
        (without("signatures"), "signatures is missing"),
        (changed(extra=1), "the envelope has unexpected keys: 'extra'"),
        (NUMBERED_KEY, "the envelope has unexpected keys: 1"),
        (changed(payloadType=7), "payloadType is a number, not a string"),
        (changed(payloadType=None), "payloadType is null, not a string"),
        (changed(payloadType="x" * 257), "payloadType is over 256 characters"),
        (changed(payloadType="\ud800"), "payloadType is not valid Unicode (a lone surrogate)"),
        (changed(payload=["aGk="]), "payload is an array, not a string"),
        (changed(payload="not base64!"), "payload is not base64"),
        (changed(payload="aGk"), "payload is not base64"),  # unpadded
        (changed(payload="aG+_"), "payload is not base64"),  # both alphabets
        (changed(payload="QR=="), "payload is not base64"),  # non-zero padding bits
        (changed(payload="aGk=\n"), "payload is not base64"),
        (changed(payload="aG k="), "payload is not base64"),
        (changed(payload="=aGk"), "payload is not base64"),
        (changed(payload="\uff10\uff10\uff10\uff10"), "payload is not base64"),  # full-width 0
        (changed(signatures={"sig": "AA=="}), "signatures is an object, not an array"),
        (changed(signatures=[]), "signatures is empty"),
        (changed(signatures=[GOOD_SIG] * 17), "signatures has 17 entries, more than 16"),
        (changed(signatures=["AA=="]), "signatures[0] is a string, not an object"),
        (changed(signatures=[{"keyid": ED.keyid}]), "signatures[0].sig is missing"),
        (with_signature(sig=5), "signatures[0].sig is a number, not a string"),
        (with_signature(sig=True), "signatures[0].sig is a boolean, not a string"),
        (with_signature(sig="%%%%"), "signatures[0].sig is not base64"),
        (with_signature(sig=""), "signatures[0].sig is empty"),
        (with_signature(sig="A" * 10924), "signatures[0].sig is over 8192 bytes"),
        (with_signature(extra="x"), "signatures[0] has unexpected keys: 'extra'"),
        (with_signature(keyid=7), "signatures[0].keyid is a number, not a string"),
        (with_signature(keyid="k" * 257), "signatures[0].keyid is over 256 characters"),
        (
            changed(signatures=[GOOD_SIG, {**GOOD_SIG, "sig": "AA="}]),
            "signatures[1].sig is not base64",
        ),
        (
            changed(payload=base64.b64encode(b"x" * (dsse.MAX_PAYLOAD_BYTES + 1)).decode()),
            "payload is over 1048576 bytes",
        ),
    ],
)
def test_malformed_documents_say_what_is_wrong(document: object, expected: str) -> None:
    with pytest.raises(InvalidEnvelope) as error:
        Envelope.from_json(document)
    assert message(error) == expected


def test_unexpected_key_names_are_escaped_and_cut_short() -> None:
    with pytest.raises(InvalidEnvelope) as error:
        Envelope.from_json(changed(**{"\x1b[31m\n" + "x" * 100: 1}))
    text = message(error)
    assert text.startswith("the envelope has unexpected keys: '\\x1b[31m\\n")
    assert text.endswith("...")
    assert "\x1b" not in text
    assert "\n" not in text
    assert len(text) < 100


def test_a_round_trip_keeps_the_envelope_and_writes_standard_base64() -> None:
    envelope = Envelope(
        "t",
        bytes(range(256)),
        (Signature("a", b"\xfb\xff\xfe" * 30), Signature("", b"\x00")),
    )
    document = envelope.to_json()
    assert Envelope.from_json(json.loads(json.dumps(document))) == envelope
    assert "-" not in document["payload"]
    assert "_" not in document["payload"]
    assert "+" in document["payload"]


def test_url_safe_base64_is_accepted_on_read() -> None:
    payload = b"\xfb\xff\xfe?>"
    urlsafe = changed(payload=base64.urlsafe_b64encode(payload).decode())
    assert "-" in urlsafe["payload"] or "_" in urlsafe["payload"]
    assert Envelope.from_json(urlsafe).payload == payload
    sig = GOOD_SIG["sig"].replace("+", "-").replace("/", "_")
    parsed = Envelope.from_json(with_signature(sig=sig))
    assert verify(parsed, [ED.public]) == ED.keyid


def test_the_bounds_are_inclusive() -> None:
    biggest = base64.b64encode(b"x" * dsse.MAX_PAYLOAD_BYTES).decode()
    assert len(Envelope.from_json(changed(payload=biggest)).payload) == 1 << 20
    assert len(Envelope.from_json(changed(signatures=[GOOD_SIG] * 16)).signatures) == 16
    assert Envelope.from_json(with_signature(keyid="k" * 256)).signatures[0].keyid == "k" * 256
    document = changed(payloadType="x" * 256)
    assert Envelope.from_json(document).payload_type == "x" * 256


def test_a_huge_payload_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(InvalidEnvelope, match="payload is over 1048576 bytes"):
        Envelope.from_json(changed(payload="!" * 50_000_000))


# Keyrings from a Secret's data


def test_a_new_keyring_signs_and_verifies() -> None:
    files = Keyring.new("verdicts-1")
    assert sorted(files) == ["active", "verdicts-1.pem"]
    assert files["active"] == b"verdicts-1"
    ring = Keyring.from_files(files)
    assert ring.active.algorithm == "ed25519"
    assert list(ring.verifiers) == [ring.active.keyid]
    assert verify(sign(VERDICT, ring.active), ring.verifiers.values()) == ring.active.keyid


def test_rotating_twice_keeps_old_ids_verifiable_but_unable_to_sign() -> None:
    first = Keyring.new("k1")
    ring1 = Keyring.from_files(first)
    early = sign(VERDICT, ring1.active)
    second = Keyring.rotate(first, "k2")
    ring2 = Keyring.from_files(second)
    middle = sign(VERDICT, ring2.active)
    third = Keyring.rotate(second, "k3", "ecdsa-p256")
    ring3 = Keyring.from_files(third)

    assert sorted(third) == ["active", "k1.pem", "k2.pem", "k3.pem"]
    assert third["active"] == b"k3"
    assert ring3.active.algorithm == "ecdsa-p256"
    ids = [ring1.active.keyid, ring2.active.keyid, ring3.active.keyid]
    assert len(set(ids)) == 3
    assert set(ring3.verifiers) == set(ids)
    assert verify(early, ring3.verifiers.values()) == ring1.active.keyid
    assert verify(middle, ring3.verifiers.values()) == ring2.active.keyid
    for old, keyid in (("k1.pem", ids[0]), ("k2.pem", ids[1])):
        assert third[old].startswith(b"-----BEGIN PUBLIC KEY-----")
        assert b"PRIVATE" not in third[old]
        assert VerifyKey.from_pem(third[old]).keyid == keyid
        with pytest.raises(ValueError, match="not a PEM private key"):
            SigningKey.from_pem(third[old])
        with pytest.raises(ValueError, match="holds a public key only"):
            Keyring.from_files({**third, "active": old.removesuffix(".pem").encode()})
    assert b"PRIVATE KEY" in first["k1.pem"]  # the input mapping is left as it was


def test_two_private_keys_and_no_active_entry_is_refused() -> None:
    files = {"a.pem": ED.to_pem(), "b.pem": EC.to_pem()}
    expected = "several private keys (a.pem, b.pem) and no active entry naming which signs"
    with pytest.raises(ValueError, match=exactly(expected)):
        Keyring.from_files(files)


def test_a_single_private_key_is_active_without_an_active_entry() -> None:
    files = {"a.pem": ED.to_pem(), "b.pem": EC.public.to_pem()}
    ring = Keyring.from_files(files)
    assert ring.active.keyid == ED.keyid
    assert set(ring.verifiers) == {ED.keyid, EC.keyid}


def test_an_active_entry_naming_a_missing_or_public_key_is_refused() -> None:
    files = {"a.pem": ED.to_pem(), "b.pem": EC.public.to_pem()}
    with pytest.raises(ValueError, match=exactly("active names 'c', but there is no 'c.pem'")):
        Keyring.from_files({**files, "active": b"c"})
    with pytest.raises(
        ValueError, match=exactly("active names b.pem, which holds a public key only")
    ):
        Keyring.from_files({**files, "active": b"b"})
    with pytest.raises(ValueError, match="the active entry is empty"):
        Keyring.from_files({**files, "active": b" \n"})
    with pytest.raises(ValueError, match="not UTF-8"):
        Keyring.from_files({**files, "active": b"\xff"})


def test_the_active_entry_is_stripped_and_may_say_pem() -> None:
    files = {"a.pem": ED.to_pem(), "b.pem": EC.to_pem()}
    assert Keyring.from_files({**files, "active": b"b\n"}).active.keyid == EC.keyid
    assert Keyring.from_files({**files, "active": b" a.pem "}).active.keyid == ED.keyid


def test_no_private_key_is_refused() -> None:
    with pytest.raises(ValueError, match=exactly("no private key among a.pem: one must sign")):
        Keyring.from_files({"a.pem": ED.public.to_pem()})
    with pytest.raises(
        ValueError, match=exactly("no private key among no *.pem entries: one must sign")
    ):
        Keyring.from_files({})


def test_ecdsa_and_ed25519_mix_in_one_ring() -> None:
    files = {"ed.pem": ED.to_pem(), "ec.pem": EC.to_pem(), "active": b"ec"}
    ring = Keyring.from_files(files)
    assert ring.active.keyid == EC.keyid
    keys = ring.verifiers.values()
    assert verify(sign(VERDICT, ED), keys) == ED.keyid
    assert verify(sign(VERDICT, EC), keys) == EC.keyid
    rotated = Keyring.from_files(Keyring.rotate(files, "next"))
    assert set(rotated.verifiers) == {ED.keyid, EC.keyid, rotated.active.keyid}


@pytest.mark.parametrize(
    ("key", "described"),
    [
        (ec.generate_private_key(ec.SECP384R1()), "ECDSA on curve secp384r1"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA, 1024 bits"),
    ],
    ids=["p-384", "rsa"],
)
def test_other_curves_and_key_types_are_refused(key: PrivateKeyTypes, described: str) -> None:
    expected = f"unsupported key ({described}): only Ed25519 and ECDSA P-256 sign verdicts"
    with pytest.raises(ValueError, match=exactly(expected)):
        SigningKey.from_pem(pkcs8(key))
    with pytest.raises(ValueError, match=exactly(expected)):
        VerifyKey.from_pem(spki(key))
    with pytest.raises(ValueError, match=exactly(f"bad.pem: {expected}")):
        Keyring.from_files({"ok.pem": ED.to_pem(), "bad.pem": pkcs8(key), "active": b"ok"})
    with pytest.raises(ValueError, match=exactly(f"bad.pem: {expected}")):
        Keyring.from_files({"ok.pem": ED.to_pem(), "bad.pem": spki(key)})


def test_unreadable_pem_is_refused_clearly() -> None:
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(
        ValueError, match=exactly("the private key is encrypted; keep it unencrypted PKCS8")
    ):
        SigningKey.from_pem(encrypted)
    with pytest.raises(
        ValueError, match=exactly("a.pem: the private key is encrypted; keep it unencrypted PKCS8")
    ):
        Keyring.from_files({"a.pem": encrypted})
    with pytest.raises(ValueError, match=r"^not a PEM private key \(PKCS8, unencrypted\)$"):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(
        ValueError, match=exactly("a.pem: not a PEM public key (SubjectPublicKeyInfo)")
    ):
        Keyring.from_files({"a.pem": b"hello"})


def test_a_mounted_volumes_dot_dot_names_and_other_names_are_ignored() -> None:
    files = {
        **Keyring.new("k1"),
        "..data": b"..2026_06_01_12_00_00.123",
        "..2026_06_01_12_00_00.123": b"",
        "..junk.pem": b"not a key",
        "README": b"verdict signing keys",
    }
    ring = Keyring.from_files(files)
    assert len(ring.verifiers) == 1
    rotated = Keyring.rotate(files, "k2")
    assert sorted(rotated) == ["README", "active", "k1.pem", "k2.pem"]
    assert rotated["README"] == b"verdict signing keys"


@pytest.mark.parametrize(
    "name",
    ["", "K1", "-k", ".k", "k/1", "k_1", "a" * 64, "k\n", "k 1", "\u0137"],
)
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not a key name"):
        Keyring.new(name)
    with pytest.raises(ValueError, match="is not a key name"):
        Keyring.rotate(Keyring.new("k1"), name)


def test_good_key_names() -> None:
    for name in ("k", "0", "verdicts-2026.06", "a" * 63):
        assert f"{name}.pem" in Keyring.new(name)


def test_rotating_to_an_existing_name_is_refused() -> None:
    files = Keyring.new("k1")
    with pytest.raises(
        ValueError, match=exactly("'k1': the keyring already has an entry of that name")
    ):
        Keyring.rotate(files, "k1")
    with pytest.raises(ValueError, match="already has an entry"):
        Keyring.rotate(files, "active")


def test_rotating_a_keyring_that_does_not_read_is_refused() -> None:
    with pytest.raises(ValueError, match="several private keys"):
        Keyring.rotate({"a.pem": ED.to_pem(), "b.pem": EC.to_pem()}, "c")


def test_the_module_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(dsse.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    allowed = {"__future__", "base64", "binascii", "hashlib", "re", "collections"}
    assert imported <= allowed | {"dataclasses", "typing", "cryptography"}
