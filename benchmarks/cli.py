"""How long a `budgetops` call takes, as a ratio to the least a command that reads a ledger
must load, measured in the same run.

Each row is a fresh interpreter; rows take turns, round by round, and each shows its best
round (start-up time only grows with noise):

1. baseline: `python -c "import pydantic, sqlite3"`, the issue's unit (1x).
2. floor: what `status` cannot avoid: import pydantic and sqlite3, read the ledger's rows and
   validate each with its model (the models' modules, building the validators of the kinds
   stored, pydantic's plugin lookup at the first build). No output, no CLI.
3. `budgetops --version`, and 4. `budgetops status --db LEDGER`, run as the console script
   runs them; with `--before DIR`, the same two again from the source tree DIR (for
   example `git archive <commit> operator | tar -x -C DIR`, then `--before DIR/operator`).

The ledger is made by `budgetops apply` of docs/examples/trustbudget-certificates.yaml and
riskbudget-payments.yaml in a temporary folder. Every interpreter reads and writes bytecode
under a private PYTHONPYCACHEPREFIX, as an installed package has its .pyc files, whatever
PYTHONDONTWRITEBYTECODE says; a first round fills it and is not counted.

Target: `--version` and `status` at most 4x the baseline.
Run: python benchmarks/cli.py [--rounds 15] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
TARGET = 4.0
CLI = "import sys; from budgetops.cli.main import main; sys.exit(main())"
FLOOR = """
import json, sqlite3, sys
from budgetops.apis.resources import RESOURCES
rows = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute(
    "SELECT kind, object, status FROM budgets"
)
for kind, obj, status in rows:
    document = json.loads(obj)
    document["status"] = json.loads(status)
    RESOURCES[kind].model.model_validate(document)
"""


def environment(pycache: Path, source: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if source is not None:
        env["PYTHONPATH"] = source
    return env


def made(ledger: Path, env: dict[str, str]) -> Path:
    """`ledger`, with the two example budgets applied by the CLI that `env` runs."""
    examples = ("trustbudget-certificates.yaml", "riskbudget-payments.yaml")
    files = [part for name in examples for part in ("-f", str(EXAMPLES / name))]
    apply = [sys.executable, "-c", CLI, "apply", "--db", str(ledger), *files]
    subprocess.run(apply, env=env, check=True, stdout=subprocess.DEVNULL)
    return ledger


def best(rows: dict[str, tuple[list[str], dict[str, str]]], rounds: int) -> dict[str, float]:
    """Each row's fastest wall time over `rounds`, after one uncounted round."""
    fastest = dict.fromkeys(rows, float("inf"))
    for counted in [False] + [True] * rounds:
        for name, (argv, env) in rows.items():
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            if counted:
                fastest[name] = min(fastest[name], time.perf_counter() - start)
    return fastest


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--rounds", type=int, default=15)
    options.add_argument("--before", help="also run the CLI from this source tree")
    args = options.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = environment(Path(folder) / "pycache", None)
        ledger = made(Path(folder) / "ledger.sqlite3", env)
        python = sys.executable
        baseline = [python, "-c", "import pydantic, sqlite3"]
        rows = {
            'python -c "import pydantic, sqlite3"': (baseline, env),
            "floor: validate the ledger's rows": ([python, "-c", FLOOR, str(ledger)], env),
            "budgetops --version": ([python, "-c", CLI, "--version"], env),
            "budgetops status": ([python, "-c", CLI, "status", "--db", str(ledger)], env),
        }
        if args.before:  # its own ledger: the two trees may store budgets differently
            before = environment(Path(folder) / "pycache-before", args.before)
            old = made(Path(folder) / "before.sqlite3", before)
            rows["before: budgetops --version"] = ([python, "-c", CLI, "--version"], before)
            status = [python, "-c", CLI, "status", "--db", str(old)]
            rows["before: budgetops status"] = (status, before)
        fastest = best(rows, args.rounds)
    names = list(rows)
    base, floor = fastest[names[0]], fastest[names[1]]
    print(f"best of {args.rounds} rounds; target: at most {TARGET:g}x the baseline")
    print(f"{'':44} {'ms':>7} {'x baseline':>11} {'x floor':>8}")
    for name in names:
        took = fastest[name]
        print(f"{name:44} {took * 1000:7.1f} {took / base:10.2f}x {took / floor:7.2f}x")


if __name__ == "__main__":
    main()
