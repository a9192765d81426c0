"""The settings `serve` and `run` serve with: built once from the flags and the environment,
checked once, and frozen (a new certificate makes new settings, never a changed Namespace)."""

from __future__ import annotations

import argparse
import dataclasses
import io
from datetime import timedelta
from pathlib import Path

import pytest

from budgetops.cli.commands import EXIT_INVALID
from budgetops.cli.dispatch import dispatch
from budgetops.cli.main import main, parser
from budgetops.cli.settings import (
    ClusterSettings,
    EmbeddedSettings,
    TTLTooLong,
    ttl_duration,
)


def parsed(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def test_serve_settings_come_from_the_flags(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    args = parsed(
        "serve", "--listen", "localhost:9443", "--ttl", "90s", "--lease-ttl", "2h",
        "--own-service-account", "system:serviceaccount:ops:budgetops",
    )  # fmt: skip
    settings = EmbeddedSettings.from_args(args, ledger, environ={})
    assert (settings.host, settings.port, settings.listen) == ("127.0.0.1", 9443, "127.0.0.1:9443")
    assert settings.ttl == timedelta(seconds=90)
    assert settings.lease_ttl == timedelta(hours=2)
    assert settings.own_service_account == "system:serviceaccount:ops:budgetops"
    assert settings.secrets_dir == tmp_path / "ledger.sqlite3.secrets"
    assert settings.verdict_keys is None
    assert settings.namespace == ""
    assert settings.tls is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ttl = timedelta(0)  # type: ignore[misc]


def test_the_environment_fills_what_no_flag_gave(tmp_path: Path) -> None:
    environ = {
        "POD_NAMESPACE": "ops",
        "BUDGETOPS_SERVICE_ACCOUNT": "system:serviceaccount:ops:budgetops",
        "BUDGETOPS_VERDICT_KEYS": str(tmp_path / "keys"),
    }
    cluster = ClusterSettings.from_args(parsed("run"), environ=environ)
    assert cluster.namespace == "ops"
    assert cluster.own_service_account == "system:serviceaccount:ops:budgetops"
    embedded = EmbeddedSettings.from_args(parsed("serve"), tmp_path / "l", environ=environ)
    assert embedded.verdict_keys == str(tmp_path / "keys")
    # a flag wins over the environment; with neither, the defaults
    flagged = parsed("run", "--namespace", "elsewhere", "--own-service-account", "me")
    assert ClusterSettings.from_args(flagged, environ=environ).namespace == "elsewhere"
    assert ClusterSettings.from_args(flagged, environ=environ).own_service_account == "me"
    keys = parsed("serve", "--verdict-keys", "/k")
    assert EmbeddedSettings.from_args(keys, tmp_path / "l", environ=environ).verdict_keys == "/k"
    bare = ClusterSettings.from_args(parsed("run"), environ={})
    assert (bare.namespace, bare.own_service_account) == ("budgetops-system", "")
    assert bare.reconcile_poll == timedelta(seconds=2)


def test_a_ttl_is_checked_in_one_place() -> None:
    assert ttl_duration("7d") == timedelta(days=7)
    with pytest.raises(TTLTooLong, match=r"^8d is longer than 7d$"):
        ttl_duration("8d")
    args = parsed("serve")
    args.ttl = "8d"  # past the parser: the settings refuse it the same way
    with pytest.raises(TTLTooLong, match=r"^8d is longer than 7d$"):
        EmbeddedSettings.from_args(args, Path("ledger"), environ={})


def test_a_bad_ttl_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--ttl", "8d", "--db", str(tmp_path / "l")])
    assert exited.value.code == EXIT_INVALID
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == ["budgetops serve: error: argument --ttl: 8d is longer than 7d"]
    # built by hand past the parser, the same check answers through dispatch: one line
    args = parsed("serve", "--db", str(tmp_path / "l"))
    args.ttl = "8d"
    out = io.StringIO()
    assert dispatch(args, out) == EXIT_INVALID
    assert out.getvalue() == "invalid: 8d is longer than 7d\n"


def test_tls_files_come_in_pairs_unless_run_makes_them() -> None:
    with pytest.raises(ValueError, match="give both --tls-cert-file and --tls-key-file"):
        ClusterSettings.from_args(parsed("run", "--tls-cert-file", "c"), environ={})
    making = ClusterSettings.from_args(
        parsed("run", "--tls-secret", "s", "--tls-extra-name", "a", "--tls-extra-name", "b"),
        environ={},
    )
    assert making.makes_tls
    assert making.tls_extra_names == ("a", "b")
    served = dataclasses.replace(making, tls_cert_file="c.pem", tls_key_file="k.pem")
    assert not served.makes_tls
    assert served.tls == ("c.pem", "k.pem")
    assert making.tls is None  # the settings it was made from are unchanged
