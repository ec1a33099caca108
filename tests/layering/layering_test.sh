#!/usr/bin/env bash
# Proves the build rejects layering violations: each case must fail at configure time with a
# "layering:" message, and the clean case must configure.
#   layering_test.sh CMAKE_DIR
set -uo pipefail
cmake_dir=$1
work=$(mktemp -d /tmp/moat-layering-XXXXXX)
trap 'rm -rf "$work"' EXIT
sed "s|@MOAT_CMAKE_DIR@|$cmake_dir|" "$(dirname "$0")/CMakeLists.txt.in" > "$work/CMakeLists.txt"
passed=0 failed=0
for c in same_layer upward cycle device_service include_upward; do
  if cmake -S "$work" -B "$work/build-$c" -DCASE=$c >"$work/$c.log" 2>&1; then
    echo "FAIL: case $c configured, expected a layering error"; failed=$((failed+1))
  elif ! grep -q "layering:" "$work/$c.log"; then
    echo "FAIL: case $c failed without a layering message:"; tail -5 "$work/$c.log"; failed=$((failed+1))
  else
    passed=$((passed+1))
  fi
done
if cmake -S "$work" -B "$work/build-ok" -DCASE=ok >"$work/ok.log" 2>&1; then
  passed=$((passed+1))
else
  echo "FAIL: the clean case did not configure:"; tail -5 "$work/ok.log"; failed=$((failed+1))
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
