#!/usr/bin/env bash
# Builds every libFuzzer target (clang-19, ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh BUILD_DIR SECONDS
# Corpora persist in fuzz-corpus/<target>/ (git-ignored) so repeated runs go deeper; seeds
# come from fuzz/seeds/<target>/ when present. A crash leaves its input in BUILD_DIR/crashes
# and fails the run.
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-19 -DMOAT_FUZZ=ON >/dev/null
cmake --build "$build" -j "$(nproc)"

targets=$(sed -n 's/^moat_fuzz(\([a-z_]*\)).*/\1/p' fuzz/CMakeLists.txt)
mkdir -p "$build/crashes"
for t in $targets; do
  corpus="fuzz-corpus/$t"
  mkdir -p "$corpus"
  seeds=()
  [[ -d "fuzz/seeds/$t" ]] && seeds=("fuzz/seeds/$t")
  # Real inputs make the best seeds: the Azure Sphere compat manifests and our test boards.
  case $t in
    app_manifest_fuzz)
      [[ -d ../shared/compat/azure-sphere-manifests ]] && seeds+=(../shared/compat/azure-sphere-manifests) ;;
    hardware_definition_fuzz) seeds+=(tests/data/hardware) ;;
  esac
  echo "fuzz: $t for ${seconds}s"
  # -rss_limit_mb keeps a memory blow-up a finding rather than a machine problem.
  if ! "$build/fuzz/$t" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -max_len=1048576 -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
      >"$build/$t.log" 2>&1; then
    tail -50 "$build/$t.log"
    echo "fuzz: $t FAILED (see $build/$t.log and $build/crashes/)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$build/$t.log" | tr '\n' ' '
  echo
done
echo "fuzz: all targets ran ${seconds}s without a finding"
