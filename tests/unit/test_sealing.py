"""Provider keys sealed for one lease (docs/lease-api.md, "Provider keys").

The fixed vector is checked against an HKDF written here from RFC 5869 (hmac + hashlib, itself
checked against the RFC's test case 1) and cryptography's AESGCM used directly, never through
derive_key or seal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetops.crypto.sealing import Sealed, SealError, derive_key, open_sealed, seal

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJhZ2VudF9pZCI6ImFnZW50X3Rlc3QwMSJ9.c2lnbmF0dXJl"
OTHER_TOKEN = TOKEN + "x"
LEASE = "lease_9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
OTHER_LEASE = "lease_00000000-0000-4000-8000-000000000000"
SECRET = "sk-test-0123456789abcdef"

# The fixed vector: every input chosen here, the output computed once outside the code under test.
SALT = bytes(range(16))
IV = bytes(range(0xA0, 0xAC))
INFO = b"budgetops.dev/provider-key/v1"  # from the doc
EXPECTED_KEY = bytes.fromhex("e979aef94d4c8316109d75a64c0cf2f37f2bdcd9c9f0d2d390052b9ceb0909f7")
EXPECTED_TEXT = "AES256:oKGio6Slpqeoqaqr:fn3DE/mVgsYeZe9tzYbfTamLuRUH5P00:4ORFo4iMXWxETlwKLz+yjg=="

B64 = r"[A-Za-z0-9+/]*={0,2}"
SHAPE = re.compile(rf"AES256:({B64}):({B64}):({B64})")

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, section 2: extract, then expand."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def doc_key(token: str, salt: bytes) -> bytes:
    return hkdf_sha256(token.encode("utf-8"), salt, INFO, 32)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parts(text: str) -> tuple[bytes, bytes, bytes]:
    match = SHAPE.fullmatch(text)
    assert match, text
    iv, ciphertext, tag = (base64.b64decode(part, validate=True) for part in match.groups())
    return iv, ciphertext, tag


def independent_open(text: str, *, token: str, lease_id: str, salt: bytes) -> str:
    iv, ciphertext, tag = parts(text)
    plain = AESGCM(doc_key(token, salt)).decrypt(iv, ciphertext + tag, lease_id.encode())
    return plain.decode()


def independent_text(plain: bytes, *, iv: bytes, key: bytes, lease_id: str = LEASE) -> str:
    sealed = AESGCM(key).encrypt(iv, plain, lease_id.encode())
    return ":".join(("AES256", b64(iv), b64(sealed[:-16]), b64(sealed[-16:])))


def open_default(text: str, *, salt: bytes = SALT) -> str:
    return open_sealed(text, identity_token=TOKEN, lease_id=LEASE, salt=salt)


def refused(text: str, *, salt: bytes = SALT, token: str = TOKEN, lease_id: str = LEASE) -> str:
    with pytest.raises(SealError) as caught:
        open_sealed(text, identity_token=token, lease_id=lease_id, salt=salt)
    message = str(caught.value)
    assert message
    assert SECRET not in message
    assert TOKEN not in message
    return message


# --- the independent HKDF is RFC 5869's --------------------------------------------------


def test_independent_hkdf_matches_rfc5869_case_1() -> None:
    okm = hkdf_sha256(bytes([0x0B]) * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


# --- the fixed vector --------------------------------------------------------------------


def test_fixed_vector_key_is_hkdf_sha256_of_the_token_as_documented() -> None:
    assert doc_key(TOKEN, SALT) == EXPECTED_KEY
    cryptography_hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=INFO)
    assert cryptography_hkdf.derive(TOKEN.encode()) == EXPECTED_KEY
    assert derive_key(TOKEN, SALT) == EXPECTED_KEY


def test_fixed_vector_opens_independently() -> None:
    sealed = seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT, iv=IV)
    assert sealed.salt == SALT
    iv, ciphertext, tag = parts(sealed.text)
    assert iv == IV
    assert len(tag) == 16
    plain = AESGCM(EXPECTED_KEY).decrypt(iv, ciphertext + tag, LEASE.encode())
    assert plain == SECRET.encode()
    assert independent_open(sealed.text, token=TOKEN, lease_id=LEASE, salt=SALT) == SECRET


def test_fixed_vector_exact_text() -> None:
    assert independent_text(SECRET.encode(), iv=IV, key=doc_key(TOKEN, SALT)) == EXPECTED_TEXT
    sealed = seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT, iv=IV)
    assert sealed.text == EXPECTED_TEXT
    assert open_default(EXPECTED_TEXT) == SECRET


def test_independently_sealed_text_opens() -> None:
    salt = bytes(range(50, 66))
    iv = bytes(12)
    secret = "sk-ключ-🔑"
    text = independent_text(secret.encode(), iv=iv, key=doc_key(TOKEN, salt))
    assert open_default(text, salt=salt) == secret


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [SECRET, "", "x", "sk-ключ-🔑", "a:b:c", "s" * 10_000])
def test_round_trip(secret: str) -> None:
    sealed = seal(secret, identity_token=TOKEN, lease_id=LEASE)
    assert isinstance(sealed, Sealed)
    assert open_sealed(sealed.text, identity_token=TOKEN, lease_id=LEASE, salt=sealed.salt) == (
        secret
    )
    assert independent_open(sealed.text, token=TOKEN, lease_id=LEASE, salt=sealed.salt) == secret


def test_sealed_shape_as_documented() -> None:
    sealed = seal(SECRET, identity_token=TOKEN, lease_id=LEASE)
    iv, ciphertext, tag = parts(sealed.text)
    assert len(iv) == 12
    assert len(tag) == 16
    assert len(ciphertext) == len(SECRET.encode())
    assert SECRET not in sealed.text
    assert len(sealed.salt) == 16
    assert base64.b64decode(sealed.salt_b64, validate=True) == sealed.salt


def test_two_seals_of_the_same_secret_differ() -> None:
    first = seal(SECRET, identity_token=TOKEN, lease_id=LEASE)
    second = seal(SECRET, identity_token=TOKEN, lease_id=LEASE)
    assert first.text != second.text
    assert first.salt != second.salt
    assert parts(first.text)[0] != parts(second.text)[0]


def test_many_seals_have_fresh_ivs_and_salts() -> None:
    sealed = [seal(SECRET, identity_token=TOKEN, lease_id=LEASE) for _ in range(50)]
    assert len({parts(s.text)[0] for s in sealed}) == 50
    assert len({s.salt for s in sealed}) == 50


def test_fresh_iv_even_with_a_given_salt() -> None:
    first = seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT)
    second = seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT)
    assert parts(first.text)[0] != parts(second.text)[0]
    assert open_default(first.text) == open_default(second.text) == SECRET


# --- tampering and the wrong context ------------------------------------------------------


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("position", [0, -1])
def test_flipped_byte_is_refused(part: int, position: int) -> None:
    pieces = list(parts(EXPECTED_TEXT))
    changed = bytearray(pieces[part])
    changed[position] ^= 0x01
    pieces[part] = bytes(changed)
    text = ":".join(("AES256", *(b64(p) for p in pieces)))
    assert "does not open" in refused(text)


def test_truncated_ciphertext_is_refused() -> None:
    iv, ciphertext, tag = parts(EXPECTED_TEXT)
    assert "does not open" in refused(f"AES256:{b64(iv)}:{b64(ciphertext[:-1])}:{b64(tag)}")
    assert "does not open" in refused(f"AES256:{b64(iv)}::{b64(tag)}")


def test_another_lease_is_refused() -> None:
    assert "does not open" in refused(EXPECTED_TEXT, lease_id=OTHER_LEASE)
    assert "does not open" in refused(EXPECTED_TEXT, lease_id="")


def test_another_token_is_refused() -> None:
    assert "does not open" in refused(EXPECTED_TEXT, token=OTHER_TOKEN)
    assert "does not open" in refused(EXPECTED_TEXT, token=TOKEN[:-1])


def test_another_salt_is_refused() -> None:
    other = bytearray(SALT)
    other[-1] ^= 0x01
    assert "does not open" in refused(EXPECTED_TEXT, salt=bytes(other))
    assert "does not open" in refused(EXPECTED_TEXT, salt=bytes(16))


def test_parts_swapped_between_two_seals_are_refused() -> None:
    other = seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT)
    _, ciphertext, _ = parts(other.text)
    iv, _, tag = parts(EXPECTED_TEXT)
    refused(f"AES256:{b64(iv)}:{b64(ciphertext)}:{b64(tag)}")


def test_plaintext_that_is_not_utf8_is_refused() -> None:
    text = independent_text(b"\xff\xfesk", iv=IV, key=doc_key(TOKEN, SALT))
    assert "UTF-8" in refused(text)


# --- malformed texts ----------------------------------------------------------------------

IV_B64 = b64(IV)
TAG_B64 = b64(bytes(16))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "four parts"),
        ("AES256", "four parts"),
        (f"AES256:{IV_B64}:{TAG_B64}", "four parts"),
        (f"{EXPECTED_TEXT}:", "four parts"),
        (f"{EXPECTED_TEXT}:{TAG_B64}", "four parts"),
        (f"AES128:{IV_B64}:AAAA:{TAG_B64}", "starts with AES256"),
        (f"aes256:{IV_B64}:AAAA:{TAG_B64}", "starts with AES256"),
        (f" AES256:{IV_B64}:AAAA:{TAG_B64}", "starts with AES256"),
        (f":{IV_B64}:AAAA:{TAG_B64}", "starts with AES256"),
        (f"AES256:{IV_B64}:!!!!:{TAG_B64}", "base64"),
        (f"AES256:{IV_B64}:AAA:{TAG_B64}", "base64"),
        (f"AES256:{IV_B64}:AA-_:{TAG_B64}", "base64"),  # base64url, not standard base64
        (f"AES256:{IV_B64}:AA AA:{TAG_B64}", "base64"),
        (f"AES256:{IV_B64}:AAAA\n:{TAG_B64}", "base64"),
        (f"AES256:{IV_B64}:ключ:{TAG_B64}", "base64"),
        (f"AES256:oKGio6Slpqeoqaq:AAAA:{TAG_B64}", "base64"),
        (f"AES256:{b64(bytes(8))}:AAAA:{TAG_B64}", "the IV is 8 bytes, not 12"),
        (f"AES256:{b64(bytes(16))}:AAAA:{TAG_B64}", "the IV is 16 bytes, not 12"),
        (f"AES256::AAAA:{TAG_B64}", "the IV is 0 bytes, not 12"),
        (f"AES256:{IV_B64}:AAAA:{b64(bytes(15))}", "the tag is 15 bytes, not 16"),
        (f"AES256:{IV_B64}:AAAA:{b64(bytes(17))}", "the tag is 17 bytes, not 16"),
        (f"AES256:{IV_B64}:AAAA:", "the tag is 0 bytes, not 16"),
    ],
)
def test_malformed_texts_are_refused_with_a_clear_message(text: str, says: str) -> None:
    assert says in refused(text)


@pytest.mark.parametrize("iv_length", [8, 16])
def test_a_properly_sealed_text_with_another_iv_length_is_refused(iv_length: int) -> None:
    # AES-GCM itself takes such IVs: only the documented 12-byte rule refuses them.
    text = independent_text(SECRET.encode(), iv=bytes(iv_length), key=doc_key(TOKEN, SALT))
    assert AESGCM(doc_key(TOKEN, SALT)).decrypt(
        bytes(iv_length), b"".join(parts(text)[1:]), LEASE.encode()
    ) == (SECRET.encode())
    assert f"the IV is {iv_length} bytes, not 12" in refused(text)


# --- properties ---------------------------------------------------------------------------


@FAST
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_any_text_raises_only_seal_error(text: str) -> None:
    with pytest.raises(SealError):
        open_default(text)


@FAST
@given(st.binary(max_size=40), st.binary(max_size=60), st.binary(max_size=40))
def test_any_well_formed_parts_raise_only_seal_error(
    iv: bytes, ciphertext: bytes, tag: bytes
) -> None:
    text = f"AES256:{b64(iv)}:{b64(ciphertext)}:{b64(tag)}"
    with pytest.raises(SealError):
        open_default(text)


@FAST
@given(
    st.text(max_size=200),
    st.text(min_size=1, max_size=100),
    st.text(max_size=60),
    st.binary(min_size=16, max_size=16),
)
def test_any_secret_round_trips_and_opens_independently(
    secret: str, token: str, lease_id: str, salt: bytes
) -> None:
    sealed = seal(secret, identity_token=token, lease_id=lease_id, salt=salt)
    assert open_sealed(sealed.text, identity_token=token, lease_id=lease_id, salt=salt) == secret
    assert independent_open(sealed.text, token=token, lease_id=lease_id, salt=salt) == secret


@pytest.mark.parametrize("iv_length", [8, 16])
def test_seal_refuses_an_iv_open_sealed_would_refuse(iv_length: int) -> None:
    with pytest.raises(ValueError, match=r"the IV must be 12 bytes"):
        seal(SECRET, identity_token=TOKEN, lease_id=LEASE, salt=SALT, iv=bytes(iv_length))
