#!/usr/bin/env bash
# Install BudgetOps into .venv and run it on the embedded ledger: load the example budgets,
# issue certificates for alice until her budget says no, ship releases until the band
# freezes them, and show the balances. Safe to run again: it starts a fresh ledger each time.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'

export BUDGETOPS_DB="$PWD/.budgetops/quickstart.sqlite3"
rm -f "$BUDGETOPS_DB" "$BUDGETOPS_DB-wal" "$BUDGETOPS_DB-shm"
budgetops=.venv/bin/budgetops

$budgetops validate -f docs/examples
$budgetops apply -f docs/examples

echo "== alice issues client certificates (a small budget of 3 for the demo)"
sed 's/initialBalance: 100/initialBalance: 3/' docs/examples/trustbudget-certificates.yaml \
  | $budgetops apply -f /dev/stdin >/dev/null
for n in 1 2 3 4; do
  $budgetops charge developer-certificates --account user:alice --id "csr-$n" \
    --object "CertificateSigningRequest/alice-$n" || true
done

echo "== payments-api ships releases"
$budgetops consume payments-api -n payments --points 50 --release-id v1.0.0
$budgetops consume payments-api -n payments --points 40 --release-id v1.1.0
$budgetops consume payments-api -n payments --points 10 --release-id v1.2.0 || true
$budgetops consume payments-api -n payments --points 10 --release-id v1.2.1 \
  --change-class security-fix

echo "== status"
$budgetops status
