"""The lazy CLI: a command imports the code it runs, not every command's.

`budgetops status` on an embedded ledger, and `--version`, must not load the cluster client,
the operator framework or the HTTP server (kopf, kubernetes, aiohttp) nor the metrics library:
they cost most of a CLI call's start-up. These are behaviour tests on `sys.modules`, run in a
fresh interpreter each, not timing tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from budgetops.adapters.keyring import VERDICT_KEYS_ENV
from budgetops.cli import commands, defaults
from budgetops.crypto.tokens import DEFAULT_ISSUER

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
HEAVY = ("kopf", "kubernetes", "aiohttp", "prometheus_client")
SIGNING = ("cryptography", "budgetops.crypto.dsse", "budgetops.usecases.charging")
MODELS = ("pydantic", "budgetops.apis.common")
READING_UNNEEDED = (
    "yaml",
    "asyncio",
    "budgetops.usecases.attest",
    "budgetops.engine.charges",
    "budgetops.engine.decisions",
    "budgetops.cli.settings",
    "budgetops.store.kube",
)
"""What a table of the embedded ledger never needs: YAML is for `-o yaml`, asyncio for the
servers and the async charge path, attesting and the
charge inputs for writes, the serving settings for `serve` and `run`, and the store in a
cluster for `--kubeconfig`."""


def loaded_after(*argv: str, watch: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """Run `budgetops ARGV` in a fresh interpreter: its exit code, and which `watch`ed
    modules (HEAVY unless told) were imported by the time it returned."""
    script = textwrap.dedent(
        f"""
        import io, json, sys
        from budgetops.cli.main import main
        try:
            code = main({list(argv)!r}, out=io.StringIO())
        except SystemExit as exit:
            code = exit.code
        print(json.dumps([code, [m for m in {watch!r} if m in sys.modules]]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lazy") / "ledger.sqlite3"
    apply = ["apply", "-f", str(EXAMPLES), "--db", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "budgetops.cli.main", *apply],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def test_version_imports_no_command() -> None:
    assert loaded_after("--version") == (0, [])


def test_version_and_help_load_no_models() -> None:
    # The parser's flag types import the models only when such a flag is given.
    assert loaded_after("--version", watch=MODELS) == (0, [])
    assert loaded_after("status", "--help", watch=MODELS) == (0, [])


def test_status_on_the_embedded_ledger_imports_no_cluster_code(ledger: Path) -> None:
    assert loaded_after("status", "--db", str(ledger)) == (0, [])


def test_status_and_list_load_no_signing_code(ledger: Path) -> None:
    # Reading commands sign nothing: the keyring's code and cryptography load with a write.
    assert loaded_after("status", "--db", str(ledger), watch=SIGNING) == (0, [])
    assert loaded_after("list", "--db", str(ledger), watch=SIGNING) == (0, [])


def test_status_and_list_tables_load_only_what_reading_needs(ledger: Path) -> None:
    assert loaded_after("status", "--db", str(ledger), watch=READING_UNNEEDED) == (0, [])
    assert loaded_after("list", "--db", str(ledger), watch=READING_UNNEEDED) == (0, [])


def test_list_and_receipts_on_the_embedded_ledger_import_no_cluster_code(ledger: Path) -> None:
    assert loaded_after("list", "--db", str(ledger)) == (0, [])
    assert loaded_after("receipts", "payments-api", "-n", "payments", "--db", str(ledger)) == (
        0,
        [],
    )


def test_agent_list_on_the_embedded_ledger_imports_no_cluster_code(ledger: Path) -> None:
    keys = str(ledger.with_name("verdict-keys"))
    listing = ("agent", "list", "--budget", "agent-llm-spend", "--db", str(ledger))
    assert loaded_after(*listing, "--verdict-keys", keys) == (0, [])


def test_every_verb_names_a_handler_that_exists() -> None:
    """A typo in a "module:function" target would only show when that verb runs."""
    parser = commands.parser("budgetops", "")
    targets = set()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for verb in getattr(action, "choices", {}).values():
            targets.add(verb.get_default("run"))
            for sub in verb._subparsers._group_actions if verb._subparsers else ():
                targets.update(leaf.get_default("run") for leaf in sub.choices.values())
    targets.discard(None)
    assert len(targets) == 26
    for target in targets:
        assert isinstance(target, commands.Target)
        module = __import__(target.module, fromlist=[target.function])
        assert callable(getattr(module, target.function)), target


def test_constants_named_for_the_parser_match_their_owners() -> None:
    assert commands.DEFAULT_ISSUER == DEFAULT_ISSUER
    assert defaults.VERDICT_KEYS_ENV == VERDICT_KEYS_ENV
