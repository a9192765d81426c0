"""The webhook's own CA and serving certificate, for clusters without cert-manager. Pure.

The CA lives ten years (rotating it means changing every caBundle, which is a manual step);
the serving certificate lives 90 days and is reissued by the same CA once it has less than
30 days left or no longer names every address the API server may call, so the caBundle the
API server holds never changes on a rotation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=90)
RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(minutes=5)
"""Certificates start a little in the past: clocks in a cluster are not all equal."""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, PEM."""

    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(now: datetime, *, name: str = "budgetops-webhook-ca") -> Pair:
    """A self-signed CA that may only sign end-entity certificates."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def new_serving(ca: Pair, names: Sequence[str], now: datetime) -> Pair:
    """A serving certificate for `names` (DNS names or IP addresses), signed by `ca`."""
    if not names:
        raise ValueError("a serving certificate needs at least one name")
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA's key is not an ECDSA key")
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVING_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def names_of(cert: bytes) -> set[str]:
    """The DNS names and IP addresses a certificate serves."""
    parsed = x509.load_pem_x509_certificate(cert)
    try:
        alternative = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    found = set(alternative.value.get_values_for_type(x509.DNSName))
    found |= {str(ip) for ip in alternative.value.get_values_for_type(x509.IPAddress)}
    return found


def due(serving: bytes, ca: bytes, names: Sequence[str], now: datetime) -> str | None:
    """Why the serving certificate must be reissued now, or None while it is good."""
    try:
        cert = x509.load_pem_x509_certificate(serving)
        issuer = x509.load_pem_x509_certificate(ca)
    except ValueError:
        return "it does not read as a PEM certificate"
    if cert.issuer != issuer.subject:
        return "it was not issued by the webhook's CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    missing = set(names) - names_of(serving)
    if missing:
        return f"it does not name {', '.join(sorted(missing))}"
    return None


def service_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a webhook Service."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]
