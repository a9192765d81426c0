"""Signed verdicts as DSSE v1 envelopes (github.com/secure-systems-lab/dsse), keys from a Secret.

A signature covers PAE(payloadType, payload), so neither the body nor its declared type can be
swapped without breaking it. Keys are Ed25519 or ECDSA P-256 (SHA-256, DER signatures, as
sigstore and cosign write them). A key id is the SHA-256 of the public key's SPKI DER, derived
from the key and never taken from input: the keyid in an envelope only narrows which known key
to try. Pure: no I/O; a Keyring reads and writes a Secret's data as a mapping of bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
MAX_PAYLOAD_BYTES: Final = 1 << 20
MAX_SIGNATURES: Final = 16
MAX_KEYID_CHARS: Final = 256
MAX_PAYLOAD_TYPE_CHARS: Final = 256
MAX_SIG_BYTES: Final = 8192
"""Far above Ed25519 (64) and P-256 DER (at most 72), so co-signatures by RSA keys still fit."""

Algorithm = Literal["ed25519", "ecdsa-p256"]
KEY_NAME: Final = re.compile(r"[a-z0-9][-a-z0-9.]{0,62}")
"""A keyring entry's name, `<name>.pem`: a Secret key, without the `..` a mounted volume uses."""
ACTIVE: Final = "active"

_ENVELOPE_KEYS: Final = frozenset({"payloadType", "payload", "signatures"})
_SIGNATURE_KEYS: Final = frozenset({"keyid", "sig"})
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")
"""Either alphabet (not both in one text), padded; the spec has readers accept either."""
_URLSAFE_TO_STANDARD: Final = str.maketrans("-_", "+/")
_ECDSA: Final = ec.ECDSA(hashes.SHA256())
_PEM: Final = serialization.Encoding.PEM
_SPKI: Final = serialization.PublicFormat.SubjectPublicKeyInfo


class InvalidEnvelope(ValueError):
    """The document is not a DSSE envelope; the message says what is wrong and quotes no input
    beyond repr-escaped key names, so it is safe to show."""


class BadSignature(ValueError):
    """The envelope is well formed but no signature verifies with a known key; says why."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a signature covers. LEN counts bytes."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        """The spec's JSON envelope, standard padded base64 (what every reader accepts)."""
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, document: object) -> Envelope:
        """Parse a decoded JSON document strictly; anything malformed raises InvalidEnvelope.

        A signature's keyid may be absent (the spec's own example omits it); it reads as "".
        """
        fields = _object(document, "the envelope", _ENVELOPE_KEYS, required=_ENVELOPE_KEYS)
        payload_type = _string(fields["payloadType"], "payloadType", MAX_PAYLOAD_TYPE_CHARS)
        try:
            payload_type.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEnvelope("payloadType is not valid Unicode (a lone surrogate)") from None
        payload = _base64(fields["payload"], "payload", MAX_PAYLOAD_BYTES)
        signatures = fields["signatures"]
        if not isinstance(signatures, list):
            raise InvalidEnvelope(f"signatures is {_json_type(signatures)}, not an array")
        if not signatures:
            raise InvalidEnvelope("signatures is empty")
        if len(signatures) > MAX_SIGNATURES:
            raise InvalidEnvelope(
                f"signatures has {len(signatures)} entries, more than {MAX_SIGNATURES}"
            )
        return cls(
            payload_type,
            payload,
            tuple(_signature(entry, f"signatures[{i}]") for i, entry in enumerate(signatures)),
        )


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return names.get(type(value), f"a {type(value).__name__}")


def _shown(names: Iterable[object]) -> str:
    """Unexpected key names, repr-escaped and cut short, so a message stays safe to show."""
    shown = [repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..." for name in names]
    return ", ".join(sorted(shown)[:5]) + (", ..." if len(shown) > 5 else "")


def _object(
    value: object, where: str, allowed: frozenset[str], *, required: frozenset[str]
) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InvalidEnvelope(f"{where} is {_json_type(value)}, not an object")
    fields = cast(dict[object, object], value)
    extra = [name for name in fields if name not in allowed]
    if extra:
        raise InvalidEnvelope(f"{where} has unexpected keys: {_shown(extra)}")
    missing = sorted(name for name in required if name not in fields)
    if missing:
        prefix = "" if where == "the envelope" else f"{where}."
        raise InvalidEnvelope(f"{prefix}{missing[0]} is missing")
    return cast(dict[str, object], fields)


def _string(value: object, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidEnvelope(f"{where} is {_json_type(value)}, not a string")
    if len(value) > max_chars:
        raise InvalidEnvelope(f"{where} is over {max_chars} characters")
    return value


def _base64(value: object, where: str, max_bytes: int) -> bytes:
    """Standard or URL-safe base64, padded and canonical (the spec: readers accept either)."""
    if not isinstance(value, str):
        raise InvalidEnvelope(f"{where} is {_json_type(value)}, not a string")
    if len(value) > 4 * -(-max_bytes // 3):  # checked before decoding anything
        raise InvalidEnvelope(f"{where} is over {max_bytes} bytes")
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise InvalidEnvelope(f"{where} is not base64")
    standard = value.translate(_URLSAFE_TO_STANDARD)
    try:
        data = base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEnvelope(f"{where} is not base64") from None
    if base64.b64encode(data) != standard.encode("ascii"):  # non-zero padding bits
        raise InvalidEnvelope(f"{where} is not base64")
    if len(data) > max_bytes:
        raise InvalidEnvelope(f"{where} is over {max_bytes} bytes")
    return data


def _signature(value: object, where: str) -> Signature:
    fields = _object(value, where, _SIGNATURE_KEYS, required=frozenset({"sig"}))
    keyid = _string(fields.get("keyid", ""), f"{where}.keyid", MAX_KEYID_CHARS)
    sig = _base64(fields["sig"], f"{where}.sig", MAX_SIG_BYTES)
    if not sig:
        raise InvalidEnvelope(f"{where}.sig is empty")
    return Signature(keyid, sig)


def key_id(public_key: PublicKeyTypes) -> str:
    """`sha256:` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, _SPKI)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _describe(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"ECDSA on curve {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA, {key.key_size} bits"
    return type(key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey")


def _algorithm(key: PrivateKeyTypes | PublicKeyTypes) -> Algorithm:
    """Which of the two supported algorithms `key` is for; ValueError for anything else."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ecdsa-p256"
    raise ValueError(
        f"unsupported key ({_describe(key)}): only Ed25519 and ECDSA P-256 sign verdicts"
    )


class VerifyKey:
    """A public key that verifies verdicts; equal keys have equal key ids."""

    def __init__(self, key: PublicKeyTypes) -> None:
        self._algorithm = _algorithm(key)
        self._key = cast(ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey, key)
        self._keyid = key_id(key)

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        """A SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`) of an Ed25519 or P-256 key."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("not a PEM public key (SubjectPublicKeyInfo)") from None
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.public_bytes(_PEM, _SPKI)

    @property
    def keyid(self) -> str:
        return self._keyid

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    def verify(self, sig: bytes, data: bytes) -> bool:
        """Whether `sig` signs `data`; False, never an exception, for any malformed `sig`."""
        try:
            if isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(sig, data)
            else:
                self._key.verify(sig, data, _ECDSA)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._keyid == self._keyid

    def __hash__(self) -> int:
        return hash(self._keyid)

    def __repr__(self) -> str:
        return f"VerifyKey({self._algorithm}, {self._keyid})"


class SigningKey:
    """A private key that signs verdicts: Ed25519 or ECDSA P-256, nothing else."""

    def __init__(self, key: PrivateKeyTypes) -> None:
        self._algorithm = _algorithm(key)
        self._key = cast(ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, key)
        self._public = VerifyKey(self._key.public_key())

    @classmethod
    def generate(cls, algorithm: Algorithm = "ed25519") -> SigningKey:
        if algorithm == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if algorithm == "ecdsa-p256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"unknown algorithm {algorithm!r}: use 'ed25519' or 'ecdsa-p256'")

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """An unencrypted private key PEM: PKCS8 (`BEGIN PRIVATE KEY`), as to_pem writes;
        cryptography also reads SEC1 (`BEGIN EC PRIVATE KEY`), which openssl ecparam writes."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise ValueError("the private key is encrypted; keep it unencrypted PKCS8") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("not a PEM private key (PKCS8, unencrypted)") from None
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def keyid(self) -> str:
        return self._public.keyid

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    @property
    def public(self) -> VerifyKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """Ed25519: the raw 64 bytes; ECDSA P-256: SHA-256 and a DER signature."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, _ECDSA)

    def __repr__(self) -> str:
        return f"SigningKey({self._algorithm}, {self.keyid})"


def sign(payload: bytes, key: SigningKey, *, payload_type: str = PAYLOAD_TYPE) -> Envelope:
    """One signature by `key` over PAE(payload_type, payload), under its derived key id."""
    return Envelope(
        payload_type, payload, (Signature(key.keyid, key.sign(pae(payload_type, payload))),)
    )


def verify(
    envelope: Envelope, keys: Iterable[VerifyKey], *, payload_type: str | None = None
) -> str:
    """The key id of the first signature that verifies with a known key of that id (or, for a
    signature with no keyid, with any known key); BadSignature, saying why, otherwise.

    `payload_type`, when given, must also be the envelope's: a verifier should accept only the
    types it parses (the spec), and this checks it after the signature, as the spec orders.
    """
    known = {key.keyid: key for key in keys}
    signed = pae(envelope.payload_type, envelope.payload)
    problems: list[str] = []
    for signature in envelope.signatures:
        if signature.keyid:
            key = known.get(signature.keyid)
            candidates = [] if key is None else [key]
        else:
            candidates = list(known.values())
        for key in candidates:
            if key.verify(signature.sig, signed):
                if payload_type is not None and envelope.payload_type != payload_type:
                    raise BadSignature(
                        f"the payloadType is {envelope.payload_type!r}, not {payload_type!r}"
                    )
                return key.keyid
        if candidates and signature.keyid:
            problems.append(f"the signature by key {signature.keyid!r} does not verify")
        elif candidates:
            problems.append(
                f"a signature without keyid verifies with none of the {len(known)} known keys"
            )
    if not envelope.signatures:
        raise BadSignature("the envelope has no signatures")
    if not known:
        raise BadSignature("no verification keys are configured")
    if problems:
        raise BadSignature("; ".join(problems))
    ids = ", ".join(repr(s.keyid) for s in envelope.signatures)
    raise BadSignature(f"no signature by a known key; the envelope's key ids: {ids}")


@dataclass(frozen=True)
class Keyring:
    """The signing key and every key id still accepted, from a Secret's data: `<name>.pem`
    entries (private PKCS8 or public SPKI) and `active`, the name of the one that signs.
    Rotation turns the old private keys into public ones: old verdicts keep verifying, and
    only the newest key can sign."""

    active: SigningKey
    verifiers: dict[str, VerifyKey]

    def sign(self, payload: bytes, *, payload_type: str = PAYLOAD_TYPE) -> Envelope:
        """`sign` by the active key: what holders of a keyring call, so that they need not
        import this module (and `cryptography`) until a keyring exists."""
        return sign(payload, self.active, payload_type=payload_type)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Keyring:
        private, verifiers = _read(files)
        if ACTIVE in files:
            try:
                name = files[ACTIVE].decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ValueError("the active entry is not UTF-8 text") from None
            entry = _entry_for(name, files)
            if entry not in private:
                raise ValueError(f"active names {entry}, which holds a public key only")
            return cls(private[entry], verifiers)
        if len(private) == 1:
            return cls(next(iter(private.values())), verifiers)
        if not private:
            raise ValueError(f"no private key among {_listed(_pem_names(files))}: one must sign")
        raise ValueError(
            f"several private keys ({_listed(private)}) and no active entry naming which signs"
        )

    @staticmethod
    def new(name: str, algorithm: Algorithm = "ed25519") -> dict[str, bytes]:
        """A Secret's data for a first keyring: one generated key, active."""
        _check_name(name)
        return {f"{name}.pem": SigningKey.generate(algorithm).to_pem(), ACTIVE: name.encode()}

    @staticmethod
    def rotate(
        files: Mapping[str, bytes], name: str, algorithm: Algorithm = "ed25519"
    ) -> dict[str, bytes]:
        """The Secret's next data: a new key `<name>.pem` active, and every private key
        entry replaced by its public key, so its id still verifies but it cannot sign."""
        _check_name(name)
        Keyring.from_files(files)  # rotate only a keyring that reads
        if f"{name}.pem" in files or name in files:
            raise ValueError(f"{name!r}: the keyring already has an entry of that name")
        private, _ = _read(files)
        rotated = {entry: data for entry, data in files.items() if not entry.startswith("..")}
        for entry, key in private.items():
            rotated[entry] = key.public.to_pem()
        rotated[f"{name}.pem"] = SigningKey.generate(algorithm).to_pem()
        rotated[ACTIVE] = name.encode()
        return rotated


def _check_name(name: str) -> None:
    if not KEY_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a key name: a-z, 0-9, '-' and '.', at most 63, starting a-z or 0-9"
        )


def _pem_names(files: Mapping[str, bytes]) -> list[str]:
    return sorted(n for n in files if n.endswith(".pem") and not n.startswith(".."))


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "no *.pem entries"


def _read(files: Mapping[str, bytes]) -> tuple[dict[str, SigningKey], dict[str, VerifyKey]]:
    """The private keys by entry name, and every entry's public key by key id."""
    private: dict[str, SigningKey] = {}
    verifiers: dict[str, VerifyKey] = {}
    for entry in _pem_names(files):
        data = files[entry]
        try:
            if b"PRIVATE KEY-----" in data:
                private[entry] = SigningKey.from_pem(data)
                public = private[entry].public
            else:
                public = VerifyKey.from_pem(data)
        except ValueError as error:
            raise ValueError(f"{entry}: {error}") from None
        verifiers[public.keyid] = public
    return private, verifiers


def _entry_for(name: str, files: Mapping[str, bytes]) -> str:
    """The `*.pem` entry `active` names: `<name>.pem`, or the entry itself if it says `.pem`."""
    if not name:
        raise ValueError("the active entry is empty; it names the *.pem key that signs")
    for entry in (f"{name}.pem", name):
        if entry.endswith(".pem") and not entry.startswith("..") and entry in files:
            return entry
    raise ValueError(f"active names {name!r}, but there is no {name + '.pem'!r}")
