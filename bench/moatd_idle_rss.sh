#!/usr/bin/env bash
# moatd's idle resident memory (issue 5 goal: <= 4 MiB): starts moatd with no apps installed
# against a service address where nothing listens (so it idles in its retry backoff), waits,
# and prints VmRSS / VmHWM from /proc/<pid>/status. Run as root (the key store's permissions).
#   bench/moatd_idle_rss.sh BUILD_DIR [SECONDS]
set -euo pipefail
build=${1:-build}
wait_s=${2:-5}
work=$(mktemp -d /tmp/moatd-rss-XXXXXX)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench-root \
  -keyout "$work/root.key" -out "$work/root.pem" -days 1 2>/dev/null
cat > "$work/moatd.json" <<JSON
{"service_url": "https://127.0.0.1:9", "service_root_certificate": "$work/root.pem",
 "state_dir": "$work/state", "os": {"name": "bench", "version": "1"}}
JSON
"$build/apps/moatd" --config "$work/moatd.json" --log-level warn >"$work/moatd.log" 2>&1 &
pid=$!
sleep "$wait_s"
if ! kill -0 "$pid" 2>/dev/null; then cat "$work/moatd.log"; exit 1; fi
grep -E "^(VmRSS|VmHWM|RssAnon|RssFile|Threads)" "/proc/$pid/status"
echo "moatd $(grep VmRSS "/proc/$pid/status" | awk '{printf "%.2f MiB", $2/1024}') resident after ${wait_s} s idle (goal <= 4 MiB)"
