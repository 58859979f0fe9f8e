#!/usr/bin/env bash
# actionlint (the linter of .github/workflows) into .tools/bin, pinned: `go install` of its module, which the Go
# module proxy serves, so this works wherever Go and the proxy are reachable (this machine, a workstation, a
# GitHub runner). It needs nothing of the engine build.
#
#   bash scripts/install-actionlint.sh   # idempotent: an installed actionlint of the pinned version is kept
set -euo pipefail

ACTIONLINT_VERSION=v1.7.12

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.tools/bin"
# shellcheck source=scripts/build-lib.sh
source "$ROOT/scripts/build-lib.sh" # log

if [[ -x "$BIN/actionlint" ]] && [[ "$("$BIN/actionlint" -version | head -1)" == "${ACTIONLINT_VERSION#v}" ]]; then
    log "actionlint $ACTIONLINT_VERSION: up to date ($BIN/actionlint)"
    exit 0
fi

mkdir -p "$BIN"
# Installed beside, then moved: a concurrent lint never runs a half-written binary.
staging=$(mktemp -d "$ROOT/.tools/actionlint.XXXXXX")
trap 'rm -rf "$staging"' EXIT
start=$(date +%s)
log "installing actionlint $ACTIONLINT_VERSION (go install github.com/rhysd/actionlint/cmd/actionlint)"
GOBIN="$staging" GOFLAGS="-p=2 -buildvcs=false" go install -trimpath \
    -ldflags "-s -w -X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION#v}" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
mv "$staging/actionlint" "$BIN/actionlint"
log "actionlint $ACTIONLINT_VERSION installed in $(($(date +%s) - start)) s: $BIN/actionlint"
