# Shared check helpers for the integration scripts; source after setting $work.
#   expect EXIT "what" -- cmd...   runs cmd (output to $work/out) and checks its exit status
#   contains TEXT "what"           checks that $work/out contains TEXT
failures=0 passes=0
pass() { passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect() {
  local want=$1 what=$2; shift 3
  "$@" >"$work/out" 2>&1
  local got=$?
  if [[ $got -ne $want ]]; then fail "$what: exit $got, expected $want"; sed 's/^/    /' "$work/out" | head -20; else pass; fi
}
contains() { if grep -qF -- "$1" "$work/out"; then pass; else fail "$2: output lacks '$1'"; sed 's/^/    /' "$work/out" | head -20; fi; }
