#!/usr/bin/env bash
# Install BudgetOps into .venv and run it on the embedded ledger: load the example budgets,
# issue certificates for alice until her budget says no, ship releases until the band
# freezes them, serve the admission webhook and send it AdmissionReviews as the API server
# would, and show the balances. Safe to run again: it starts a fresh ledger each time.
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

echo "== the admission webhook, as the API server calls it"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$budgetops serve --listen "127.0.0.1:$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
.venv/bin/python - "$port" <<'PY'
import json, sys, time, urllib.request

port = sys.argv[1]
def review(uid, user, groups):
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "operation": "CREATE",
        "kind": {"group": "certificates.k8s.io", "version": "v1", "kind": "CertificateSigningRequest"},
        "resource": {"group": "certificates.k8s.io", "version": "v1",
                     "resource": "certificatesigningrequests"},
        "userInfo": {"username": user, "groups": groups},
        "object": {"metadata": {"name": f"{user}-{uid}", "uid": uid}}}}).encode()

for _ in range(50):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
for uid, user in (("bob-1", "bob"), ("alice-5", "alice")):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/validate?timeout=5s",
                                     data=review(uid, user, ["developers"]),
                                     headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request))["response"]
    verdict = "allowed" if answer["allowed"] else "denied"
    print(f"{user}: {verdict}:", (answer.get("warnings") or [answer.get("status", {}).get("message")])[0])
PY
kill $server; wait $server 2>/dev/null || true; trap - EXIT

echo "== status"
$budgetops status
