#!/usr/bin/env bash
# The whole check, as CI runs it: install into .venv, build (or reuse) the test control
# plane and its node, lint and type-check, then every test, cluster and node tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
export PATH="$PWD/.venv/bin:$PATH"

python hack/control_plane.py build >/dev/null
# The node's Debian packages (containerd, runc, CNI plugins, iptables) when missing: apt-get.
python hack/node.py prepare >/dev/null
ruff check .
ruff format --check .
mypy
mypy --strict hack/control_plane.py hack/node.py
lint-imports
python -m pytest "$@"
