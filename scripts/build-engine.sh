#!/usr/bin/env bash
# Build the Pulumi engine from Go modules into .tools/bin (git-ignored), so that preview/up run offline:
# nothing is downloaded at run time, and get.pulumi.com / GitHub are never contacted.
#
#   bash scripts/build-engine.sh          # idempotent: a binary whose stamp matches is not rebuilt
#   FORCE=1 bash scripts/build-engine.sh  # rebuild everything
#
# Then run the engine with (see the end of this script's output):
#   export PATH="$PWD/.tools/bin:$PATH" PULUMI_HOME="$PWD/.tools/pulumi-home" \
#          PULUMI_SKIP_UPDATE_CHECK=1 PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
set -euo pipefail

# ---- pinned versions -------------------------------------------------------------------------------------
# The Python SDK is pulumi==3.272.0, but the Go module proxy reachable here does not serve
# github.com/pulumi/pulumi/pkg/v3@v3.272.0 (403 "This module version is not available"); v3.274.1 is the
# nearest served release (a CLI newer than the SDK is supported; the reverse is not). Keep PULUMI_VERSION in
# step with tools/engine/pulumi/go.mod (pkg/v3 and sdk/v3 are required there at this version).
PULUMI_VERSION=v3.274.1
# tools/engine/pulumi/cmd/pulumi-language-python (ours: the upstream host module is not served), built
# against sdk/v3 PULUMI_VERSION; it reports this version.
LANGHOST_VERSION=${PULUMI_VERSION}
ACTIONLINT_VERSION=v1.7.12
# Resource providers matching the Python SDKs in uv.lock. None of these modules is served by the proxy
# reachable here (403 or 404, see try_provider); the script checks again on every run and says so.
COMMAND_PROVIDER=github.com/pulumi/pulumi-command/provider@v1.2.1
TLS_PROVIDER=github.com/pulumi/pulumi-tls/provider/v5@v5.6.2
RANDOM_PROVIDER=github.com/pulumi/pulumi-random/provider/v4@v4.21.4
LIBVIRT_PROVIDER=github.com/pulumi/pulumi-libvirt/provider@v0.5.4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
export PULUMI_HOME="$TOOLS/pulumi-home"
ENGINE_MOD="$ROOT/tools/engine/pulumi"
FORCE=${FORCE:-0}

# Two cores: one build at a time, two compile jobs. -buildvcs=false: the wrapper module lives in this repo.
export GOFLAGS="${GOFLAGS:-} -p=2 -buildvcs=false"
# Use the local Go; fail rather than download another toolchain.
export GOTOOLCHAIN=local
LDFLAGS_BASE="-s -w"

mkdir -p "$BIN" "$STAMPS" "$PULUMI_HOME"

log() { printf '==> %s\n' "$*"; }

# stamp_ok NAME STAMP: true when BIN/NAME exists and was built from exactly STAMP.
stamp_ok() {
    local name=$1 stamp=$2
    [[ $FORCE != 1 && -x "$BIN/$name" && -f "$STAMPS/$name" && "$(cat "$STAMPS/$name")" == "$stamp" ]]
}

# timed NAME CMD...: run CMD, print how long it took.
timed() {
    local name=$1 start end
    shift
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    log "$name built in $((end - start))s"
}

go_version=$(go env GOVERSION)
log "Go $go_version; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"

# ---- pulumi CLI ------------------------------------------------------------------------------------------
build_pulumi() {
    (cd "$ENGINE_MOD" && go build -trimpath \
        -ldflags "$LDFLAGS_BASE -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
        -o "$BIN/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
    mv "$BIN/pulumi.tmp" "$BIN/pulumi"
}
stamp="pulumi $PULUMI_VERSION $go_version $(sha256sum "$ENGINE_MOD/go.sum" | cut -c1-16)"
if stamp_ok pulumi "$stamp"; then
    log "pulumi $PULUMI_VERSION: up to date"
else
    log "building pulumi $PULUMI_VERSION (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi; cold: ~15-20 min on 2 cores)"
    timed pulumi build_pulumi
    printf '%s\n' "$stamp" >"$STAMPS/pulumi"
fi

# ---- Python language host --------------------------------------------------------------------------------
sdk_dir=$(cd "$ENGINE_MOD" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
build_langhost() {
    (cd "$ENGINE_MOD" && go build -trimpath \
        -ldflags "$LDFLAGS_BASE -X main.version=$LANGHOST_VERSION" \
        -o "$BIN/pulumi-language-python.tmp" ./cmd/pulumi-language-python)
    mv "$BIN/pulumi-language-python.tmp" "$BIN/pulumi-language-python"
}
stamp="pulumi-language-python $LANGHOST_VERSION $go_version $(cat "$ENGINE_MOD/go.sum" \
    "$ENGINE_MOD/cmd/pulumi-language-python/main.go" | sha256sum | cut -c1-16)"
if stamp_ok pulumi-language-python "$stamp"; then
    log "pulumi-language-python $LANGHOST_VERSION: up to date"
else
    log "building pulumi-language-python $LANGHOST_VERSION (tools/engine/pulumi/cmd/pulumi-language-python)"
    timed pulumi-language-python build_langhost
    printf '%s\n' "$stamp" >"$STAMPS/pulumi-language-python"
fi
# Scripts shipped in sdk/v3 next to the upstream binaries: the program runner the language host calls, and
# the dynamic-provider plugin (pulumi.dynamic) the engine starts as `pulumi-resource-pulumi-python`.
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$BIN/pulumi-resource-pulumi-python"

# ---- actionlint -----------------------------------------------------------------------------------------
build_actionlint() {
    GOBIN="$BIN" go install -trimpath \
        -ldflags "$LDFLAGS_BASE -X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION#v}" \
        "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
}
stamp="actionlint $ACTIONLINT_VERSION $go_version"
if stamp_ok actionlint "$stamp"; then
    log "actionlint $ACTIONLINT_VERSION: up to date"
else
    log "building actionlint $ACTIONLINT_VERSION"
    timed actionlint build_actionlint
    printf '%s\n' "$stamp" >"$STAMPS/actionlint"
fi

# ---- resource providers ---------------------------------------------------------------------------------
# try_provider NAME MODULE@VERSION: a provider can only be built if the proxy serves its module. None is
# served today; say so (with the proxy's answer) and go on, so the engine and language host stay usable.
missing_providers=()
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
go_proxy=$(go env GOPROXY)
go_proxy=${go_proxy%,direct}
try_provider() {
    local name=$1 modver=$2 out
    if [[ -x "$PULUMI_HOME/plugins/resource-$name-v${modver##*@v}/pulumi-resource-$name" ]]; then
        log "provider $name ${modver##*@}: installed"
        return 0
    fi
    # Outside any module (nothing is recorded), asking the proxy only (no fallback to the VCS host).
    if out=$(cd "$probe_dir" && GOPROXY=$go_proxy GOFLAGS='' go mod download -json "$modver" 2>&1); then
        log "provider $name: $modver is now served by the Go proxy: add a wrapper module for it"
    else
        log "provider $name: cannot build, $modver is not served by the Go module proxy:"
        printf '    %s\n' "$(printf '%s' "$out" | grep -m1 -E '"Error"|go: ' || printf '%s' "$out" | head -n1)"
    fi
    missing_providers+=("$name")
}
try_provider command "$COMMAND_PROVIDER"
try_provider tls "$TLS_PROVIDER"
try_provider random "$RANDOM_PROVIDER"
try_provider libvirt "$LIBVIRT_PROVIDER"

# ---- summary --------------------------------------------------------------------------------------------
log "binaries in $BIN:"
for f in pulumi pulumi-language-python actionlint; do
    printf '    %-26s %s\n' "$f" "$(du -h "$BIN/$f" | cut -f1)"
done
"$BIN/pulumi" version
log "Go caches: $(du -sh "$(go env GOMODCACHE)" | cut -f1) module cache, $(du -sh "$(go env GOCACHE)" | cut -f1) build cache"
if ((${#missing_providers[@]})); then
    log "providers not available: ${missing_providers[*]} (programs using them cannot run offline here)"
fi
cat <<EOF
==> run the engine offline with:
    export PATH="$BIN:\$PATH" PULUMI_HOME="$PULUMI_HOME"
    export PULUMI_SKIP_UPDATE_CHECK=1 PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
EOF
