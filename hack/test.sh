#!/usr/bin/env bash
# The whole check, as CI runs it: install into .venv, build (or reuse) the test control
# plane, lint and type-check, then every test, cluster tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
export PATH="$PWD/.venv/bin:$PATH"

python hack/control_plane.py build >/dev/null
ruff check .
ruff format --check .
mypy
mypy --strict hack/control_plane.py
lint-imports
python -m pytest "$@"
