#!/usr/bin/env bash
# kill -9 moat-service during a burst of writes, restart it, and check that every write it
# acknowledged (HTTP 201) is still there — and that the database is intact.
#   service_durability_test.sh MOAT MOAT_SERVICE
set -uo pipefail
moat=$1 service=$2
work=$(mktemp -d /tmp/moat-durability-XXXXXX)
pid=""
writers=()
cleanup() {
  for w in "${writers[@]}"; do kill -9 "$w" 2>/dev/null; done
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$service" init --data-dir "$work/data" --ip 127.0.0.1 --port "$port" >/dev/null || exit 1
cfg="$work/data/admin.moat.json"
python3 - "$cfg" "$work" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); w = sys.argv[2]
open(f"{w}/root.pem", "w").write(c["root_certificate"])
open(f"{w}/admin.crt", "w").write(c["certificate"])
open(f"{w}/admin.key", "w").write(c["private_key"])
PY
url="https://127.0.0.1:$port"
start() {
  "$service" run --data-dir "$work/data" >>"$work/service.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf --cacert "$work/root.pem" "$url/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: moat-service did not come up"; cat "$work/service.log"; exit 1
}
start
# Two writers create tenants as fast as they can; each logs a name only once acknowledged.
for w in 1 2; do
  (
    for i in $(seq 1 400); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/root.pem" --cert "$work/admin.crt" \
        --key "$work/admin.key" -H 'Content-Type: application/json' \
        --data "{\"name\":\"t-$w-$i\"}" "$url/api/v1/tenants")
      [[ $code == 201 ]] && echo "t-$w-$i" >> "$work/acked-$w"
    done
  ) &
  writers+=($!)
done
sleep 3
kill -9 "$pid"
wait "$pid" 2>/dev/null
for w in "${writers[@]}"; do kill -9 "$w" 2>/dev/null; wait "$w" 2>/dev/null; done
writers=()
acked=$(cat "$work"/acked-* 2>/dev/null | sort)
n_acked=$(echo "$acked" | grep -c . || true)
start
"$moat" --config "$cfg" tenant list --output json > "$work/list.json" || { echo "FAIL: tenant list after restart"; exit 1; }
present=$(python3 -c 'import json,sys; print("\n".join(sorted(t["name"] for t in json.load(open(sys.argv[1]))["tenants"])))' "$work/list.json")
missing=$(comm -23 <(echo "$acked") <(echo "$present") | grep -c . || true)
failures=0 passes=0
if [[ $n_acked -lt 5 ]]; then echo "FAIL: only $n_acked writes were acknowledged before the kill"; failures=$((failures+1)); else passes=$((passes+1)); fi
if [[ $missing -ne 0 ]]; then echo "FAIL: $missing acknowledged tenants are missing after kill -9"; failures=$((failures+1)); else passes=$((passes+1)); fi
# A tenant, its CA and its audit entry are written in one transaction: after the crash there is
# exactly one tenant.create audit entry per tenant, no more, no fewer.
"$moat" --config "$cfg" audit list --limit 1000 --output json > "$work/audit.json"
n_audit=$(python3 -c 'import json,sys; print(sum(1 for e in json.load(open(sys.argv[1]))["entries"] if e["action"]=="tenant.create" and e["outcome"]=="ok"))' "$work/audit.json")
n_tenants=$(echo "$present" | grep -c . || true)
if [[ $n_audit -eq $n_tenants ]]; then passes=$((passes+1)); else echo "FAIL: $n_tenants tenants but $n_audit tenant.create audit entries"; failures=$((failures+1)); fi
echo "acknowledged $n_acked writes before kill -9; all present after restart: $([[ $missing -eq 0 ]] && echo yes || echo no)"
kill -TERM "$pid"; wait "$pid"; pid=""
echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
