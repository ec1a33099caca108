#!/usr/bin/env bash
# Runs Moat's benchmarks beside the reference measurements, in one session, on one core.
#   bench/run.sh BUILD_DIR
# Prints each figure and the ratio that the goals are stated in. Nothing here asserts a
# timing: machines are shared and noisy, so compare ratios from one run.
set -euo pipefail
build=${1:-build}
out="$build/bench-results"
mkdir -p "$out"
pin="taskset -c 0"
command -v taskset >/dev/null || pin=""

echo "== openssl speed (reference), pinned to one core"
$pin openssl speed -seconds 3 -evp sha256 -bytes 1048576 2>/dev/null | tee "$out/openssl-sha256.txt" | tail -2
$pin openssl speed -seconds 3 ecdsap256 ed25519 2>/dev/null | tee "$out/openssl-sign.txt" | grep -E "^ *(sign|256 bits|253 bits)" || true

echo
echo "== Moat crypto_bench, pinned to one core"
$pin "$build/bench/crypto_bench" --benchmark_min_time=2 --benchmark_format=console \
  --benchmark_out="$out/crypto_bench.json" --benchmark_out_format=json | tee "$out/crypto_bench.txt"

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
# openssl speed prints e.g. "sha256   1234567.89k" in 1000s of bytes per second.
line = [l for l in open(f"{out}/openssl-sha256.txt") if l.lower().startswith("sha256")][-1]
openssl_bps = float(line.split()[-1].rstrip("k")) * 1000
bench = json.load(open(f"{out}/crypto_bench.json"))["benchmarks"]
by = {b["name"]: b for b in bench}
pkg = by.get("BM_VerifyImagePackage_64MiB")
sha = by.get("BM_Sha256_16MiB")
print()
print(f"openssl speed -evp sha256 (1 MiB blocks): {openssl_bps/1e6:8.1f} MB/s")
if sha:
    print(f"moat SHA-256 of 16 MiB:                   {sha['bytes_per_second']/1e6:8.1f} MB/s  ({sha['bytes_per_second']/openssl_bps:.0%} of openssl)")
if pkg:
    r = pkg['bytes_per_second']/openssl_bps
    print(f"moat verify 64 MiB image package:         {pkg['bytes_per_second']/1e6:8.1f} MB/s  ({r:.0%} of openssl; goal >= 80%)")
PY

echo
echo "== moat-service-load: moat-service on cpu 0 (--threads 1), the driver and s_time on cpu 1"
# About 40 s: setup, 100 devices x 3 attestations, 8 s of whoami, openssl baselines.
# Fails (non-zero) on any unexpected response; see bench/README.md for reading the table.
"$build/bench/moat-service-load" --devices 100 --threads 8 --rounds 3 --seconds 8 \
  --json "$out/service_load.json" | tee "$out/service_load.txt"

echo
echo "== moat-sandbox-coldstart: sandboxed cold start of a static hello, Moat vs bwrap and crun"
# About 10 s: 50 runs per launcher, taking turns, all pinned to cpu 1. Needs root (the sandbox
# launcher does) and, for the peers, bubblewrap and crun (scripts/install-deps.sh).
if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: needs root"
elif ! command -v bwrap >/dev/null || ! command -v crun >/dev/null; then
  echo "skipped: bwrap or crun missing (apt-get install bubblewrap crun)"
else
  "$build/bench/moat-sandbox-coldstart" --runs 50 --cpu 1 \
    --json "$out/sandbox_coldstart.json" | tee "$out/sandbox_coldstart.txt"
fi

echo
echo "== moat-update-bench: an unchanged update check; a 64 MiB install beside sha256sum"
$pin "$build/bench/moat-update-bench" --checks 200 | tee "$out/update_bench.txt"

echo
echo "== moatd idle resident memory (goal <= 4 MiB)"
if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: needs root"
else
  bash "$(dirname "$0")/moatd_idle_rss.sh" "$build" 5 | tee "$out/moatd_idle_rss.txt"
fi
