"""The webhook's own CA and serving certificate: a chain that verifies, and reissued exactly
when it must be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509

from budgetops.crypto import webhookcerts

NOW = datetime(2026, 12, 3, tzinfo=UTC)
NAMES = [*webhookcerts.service_names("budgetops", "ops"), "127.0.0.1"]


def test_the_serving_certificate_is_issued_by_the_ca_for_every_name() -> None:
    ca = webhookcerts.new_ca(NOW)
    serving = webhookcerts.new_serving(ca, NAMES, NOW)
    issuer, cert = (x509.load_pem_x509_certificate(p) for p in (ca.cert, serving.cert))
    cert.verify_directly_issued_by(issuer)
    assert issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert webhookcerts.names_of(serving.cert) == set(NAMES)
    assert cert.not_valid_after_utc - NOW == webhookcerts.SERVING_LIFETIME
    assert cert.not_valid_before_utc < NOW, "backdated for clocks a little behind"
    assert webhookcerts.due(serving.cert, ca.cert, NAMES, NOW) is None


def test_it_is_reissued_before_expiry_for_a_new_name_or_another_ca() -> None:
    ca = webhookcerts.new_ca(NOW)
    serving = webhookcerts.new_serving(ca, NAMES, NOW)
    later = NOW + webhookcerts.SERVING_LIFETIME - webhookcerts.RENEW_BEFORE + timedelta(seconds=1)
    assert webhookcerts.due(serving.cert, ca.cert, NAMES, later - timedelta(seconds=2)) is None
    assert "expires at" in str(webhookcerts.due(serving.cert, ca.cert, NAMES, later))
    assert webhookcerts.due(serving.cert, ca.cert, [*NAMES, "other.ops.svc"], NOW) == (
        "it does not name other.ops.svc"
    )
    other = webhookcerts.new_ca(NOW, name="someone-else")
    assert webhookcerts.due(serving.cert, other.cert, NAMES, NOW) == (
        "it was not issued by the webhook's CA"
    )
    assert webhookcerts.due(b"garbage", ca.cert, NAMES, NOW) == (
        "it does not read as a PEM certificate"
    )


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    ca = webhookcerts.new_ca(NOW - webhookcerts.CA_LIFETIME + timedelta(days=10))
    serving = webhookcerts.new_serving(ca, NAMES, NOW)
    issuer, cert = (x509.load_pem_x509_certificate(p) for p in (ca.cert, serving.cert))
    assert cert.not_valid_after_utc == issuer.not_valid_after_utc
