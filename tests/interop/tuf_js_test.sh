#!/usr/bin/env bash
# Cross-implementation check: tuf-js (the TUF client used by npm and sigstore-js) refreshes
# and downloads targets from a repository written by Moat's RepositoryWriter.
#   tuf_js_test.sh TUF_REPO_GEN SOURCE_DIR
# tuf-js comes from scripts/install-deps.sh (npm, into third_party/node, git-ignored) or from
# $MOAT_TUF_JS_DIR (a node_modules directory). Without node or tuf-js the test is skipped
# (exit 77), saying why.
set -euo pipefail
gen=$1
src=$2
modules=${MOAT_TUF_JS_DIR:-$src/third_party/node/node_modules}

if ! command -v node >/dev/null; then
  echo "SKIP: node is not installed"
  exit 77
fi
if [[ ! -f $modules/tuf-js/package.json ]]; then
  echo "SKIP: tuf-js not found in $modules (run scripts/install-deps.sh, or set MOAT_TUF_JS_DIR)"
  exit 77
fi
echo "tuf-js $(node -p "require('$modules/tuf-js/package.json').version"), node $(node --version)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$gen" "$work"
node "$src/tests/interop/tuf_js_client.js" "$modules" "$work"
