#!/usr/bin/env bash
# Build the Pulumi engine users run (CLI, upstream Python language host, the four resource providers) into
# .tools/ (git-ignored), so that preview/up/destroy run offline: nothing is downloaded at run time.
#
#   bash scripts/build-engine.sh          # idempotent: a binary whose stamp matches is not rebuilt
#   FORCE=1 bash scripts/build-engine.sh  # rebuild everything
#
# Where a `pulumi` CLI and the plugins of the right versions already exist (a normal workstation, outside
# .tools), they are used and nothing is built. Run the engine with `scripts/pulumi.sh` (sets PATH/PULUMI_HOME).
#
# The CLI comes from the Go module proxy (tools/engine/pulumi pins it). The language host and the providers
# are refused by the proxy; their upstream trees, pinned, are in ../shared/third_party (read-only): each is
# copied to .tools/src and the go.mod edits it needs are applied there with `go mod edit`.
set -euo pipefail

# ---- pinned versions -------------------------------------------------------------------------------------
# The Python SDK is pulumi==3.272.0; the proxy does not serve pkg/v3@v3.272.0, v3.274.1 is the nearest served
# release (a CLI newer than the SDK is supported). Keep in step with tools/engine/pulumi/go.mod.
PULUMI_VERSION=v3.274.1
# Provider versions = the Python SDK packages in uv.lock (the engine warns on any mismatch).
COMMAND_VERSION=1.2.1
RANDOM_VERSION=4.21.1
TLS_VERSION=5.5.1
LIBVIRT_VERSION=0.5.4

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THIRD_PARTY=${THIRD_PARTY:-$(cd "$ROOT/.." && pwd)/shared/third_party}
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
SRC="$TOOLS/src"
STAMPS="$TOOLS/stamps"
export PULUMI_HOME="$TOOLS/pulumi-home"
ENGINE_MOD="$ROOT/tools/engine/pulumi"
FORCE=${FORCE:-0}

# Two cores: two compile jobs. -mod=mod: the go.mod edits below change the module graph.
export GOFLAGS="-p=2 -buildvcs=false -mod=mod"
export GOTOOLCHAIN=local # use the local Go; never download another toolchain
export PULUMI_SKIP_UPDATE_CHECK=1 PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
LDFLAGS_BASE="-s -w"

mkdir -p "$BIN" "$SRC" "$STAMPS" "$PULUMI_HOME"
# shellcheck source=scripts/build-lib.sh
source "$ROOT/scripts/build-lib.sh" # log, stamp_ok, tree_hash, fresh_copy
# One build at a time (CI starts one early in the background; `make test` asks again and waits for it).
exec 9>"$TOOLS/.build.lock"
if ! flock -n 9; then
    log "another engine build is running: waiting for it"
    flock 9
fi
script_start=$(date +%s)

# timed NAME CMD...: run CMD, print how long it took.
timed() {
    local name=$1 start
    shift
    start=$(date +%s)
    "$@"
    log "$name built in $(($(date +%s) - start)) s"
}

go_version=$(go env GOVERSION)
log "Go $go_version; GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"

# ---- a workstation that already has the engine ------------------------------------------------------------
# plugin_present NAME VERSION: the plugin is installed in PULUMI_HOME.
plugin_present() {
    [[ -x "$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1" ]]
}
system_pulumi=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vx "$BIN" | paste -sd:) command -v pulumi || true)
if [[ -n $system_pulumi && $FORCE != 1 ]]; then
    home=${SYSTEM_PULUMI_HOME:-$HOME/.pulumi}
    have_all=1
    for p in "command $COMMAND_VERSION" "random $RANDOM_VERSION" "tls $TLS_VERSION" "libvirt $LIBVIRT_VERSION"; do
        read -r name version <<<"$p"
        [[ -x "$home/plugins/resource-$name-v$version/pulumi-resource-$name" ]] || have_all=0
    done
    if ((have_all)) && command -v pulumi-language-python >/dev/null; then
        log "using the installed engine: $system_pulumi ($("$system_pulumi" version)) and plugins in $home"
        printf '%s\n' "$system_pulumi" >"$TOOLS/system-pulumi"
        printf '%s\n' "$home" >"$TOOLS/system-pulumi-home"
        use_system=1
    fi
fi
use_system=${use_system:-0}
((use_system)) || rm -f "$TOOLS/system-pulumi" "$TOOLS/system-pulumi-home"

build_engine() {

# ---- pulumi CLI (from the Go module proxy) ---------------------------------------------------------------
build_pulumi() {
    (cd "$ENGINE_MOD" && go build -trimpath \
        -ldflags "$LDFLAGS_BASE -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
        -o "$BIN/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
    mv "$BIN/pulumi.tmp" "$BIN/pulumi"
}
stamp="pulumi $PULUMI_VERSION $go_version $(sha256sum "$ENGINE_MOD/go.sum" | cut -c1-16)"
if stamp_ok pulumi "$stamp" "$BIN/pulumi"; then
    log "pulumi $PULUMI_VERSION: up to date"
else
    log "building pulumi $PULUMI_VERSION (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)"
    timed "pulumi $PULUMI_VERSION" build_pulumi
    printf '%s\n' "$stamp" >"$STAMPS/pulumi"
fi

# ---- the dynamic-provider launcher (components/drift.py's ServerDrift) -------------------------------------
# Every CLI release ships sdk/python/dist/pulumi-resource-pulumi-python next to `pulumi`; it is upstream's script,
# taken from the SDK module the CLI was built from (in the Go module cache), so the engine finds it bundled.
sdk_dir=$(cd "$ENGINE_MOD" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$BIN/pulumi-resource-pulumi-python"
log "pulumi-resource-pulumi-python: from $sdk_dir"

# ---- upstream Python language host -----------------------------------------------------------------------
# Its go.mod replaces pkg/sdk with the monorepo's own directories; build it against the CLI's release instead.
build_langhost() {
    fresh_copy pulumi-language-python
    local dir="$SRC/pulumi-language-python/sdk/python/cmd/pulumi-language-python"
    (cd "$dir" &&
        go mod edit -dropreplace github.com/pulumi/pulumi/pkg/v3 -dropreplace github.com/pulumi/pulumi/sdk/v3 \
            -require "github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION" \
            -require "github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION" &&
        go build -trimpath \
            -ldflags "$LDFLAGS_BASE -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
            -o "$BIN/pulumi-language-python.tmp" .)
    mv "$BIN/pulumi-language-python.tmp" "$BIN/pulumi-language-python"
    # The host runs the program through this script, looked up next to its own binary.
    install -m 0755 "$SRC/pulumi-language-python/sdk/python/cmd/pulumi-language-python-exec" \
        "$BIN/pulumi-language-python-exec"
}
stamp="langhost $PULUMI_VERSION $go_version $(tree_hash "$THIRD_PARTY/pulumi-language-python")"
if stamp_ok pulumi-language-python "$stamp" "$BIN/pulumi-language-python-exec"; then
    log "pulumi-language-python $PULUMI_VERSION: up to date"
else
    log "building pulumi-language-python (upstream, ../shared/third_party/pulumi-language-python)"
    timed pulumi-language-python build_langhost
    printf '%s\n' "$stamp" >"$STAMPS/pulumi-language-python"
fi

# ---- resource providers ----------------------------------------------------------------------------------
# Each: copy, go mod edit, (go generate the embedded schema), build, `pulumi plugin install --file`.
build_command() {
    fresh_copy pulumi-command-1.2.1
    (cd "$SRC/pulumi-command-1.2.1/provider" && go build -trimpath \
        -ldflags "$LDFLAGS_BASE -X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$COMMAND_VERSION" \
        -o "$SRC/pulumi-resource-command" ./cmd/pulumi-resource-command)
}
# random and tls pin pseudo-versions of pulumi-yaml, the dotnet host and pulumi-java that the proxy refuses;
# require served releases (java < 1.34 does not compile against the newer pulumi codegen).
BRIDGED_CODEGEN_EDITS=(-require github.com/pulumi/pulumi-yaml@v1.38.1
    -require github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3@v3.110.0
    -require github.com/pulumi/pulumi-java@v1.34.0)
# generate_and_build TREE NAME VERSION VERSION_PKG: a bridged provider's embedded schema, then its binary.
generate_and_build() {
    local tree=$1 name=$2 version=$3 version_pkg=$4
    (cd "$SRC/$tree/provider" &&
        VERSION=$version go generate "./cmd/pulumi-resource-$name" &&
        CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS_BASE -X $version_pkg.Version=$version" \
            -o "$SRC/pulumi-resource-$name" "./cmd/pulumi-resource-$name")
}
build_random() {
    fresh_copy pulumi-random-4.21.1
    (cd "$SRC/pulumi-random-4.21.1/provider" && go mod edit "${BRIDGED_CODEGEN_EDITS[@]}")
    generate_and_build pulumi-random-4.21.1 random "$RANDOM_VERSION" github.com/pulumi/pulumi-random/provider/v4/pkg/version
}
build_tls() {
    fresh_copy pulumi-tls-5.5.1
    # The terraform-provider-tls commit tls 5.5.1 pins is refused; v5.3.0's is served.
    (cd "$SRC/pulumi-tls-5.5.1/provider" &&
        go mod edit "${BRIDGED_CODEGEN_EDITS[@]}" \
            -replace github.com/hashicorp/terraform-provider-tls=github.com/hashicorp/terraform-provider-tls@v1.2.1-0.20260130152455-857b38cda3fc)
    generate_and_build pulumi-tls-5.5.1 tls "$TLS_VERSION" github.com/pulumi/pulumi-tls/provider/v5/pkg/version
}
build_libvirt() {
    fresh_copy pulumi-libvirt-0.5.4
    fresh_copy terraform-provider-libvirt-0.8.1
    # pulumi-libvirt 0.5.4 wraps terraform-provider-libvirt v0.8.1, which the proxy refuses.
    (cd "$SRC/pulumi-libvirt-0.5.4/provider" &&
        go mod edit -replace "github.com/dmacvicar/terraform-provider-libvirt=$SRC/terraform-provider-libvirt-0.8.1")
    generate_and_build pulumi-libvirt-0.5.4 libvirt "$LIBVIRT_VERSION" github.com/pulumi/pulumi-libvirt/provider/pkg/version
}

# provider NAME VERSION TREE...: build (if its sources or Go changed) and install the plugin.
provider() {
    local name=$1 version=$2 stamp tree
    shift 2
    stamp="$name $version $go_version"
    for tree in "$@"; do stamp+=" $(tree_hash "$THIRD_PARTY/$tree")"; done
    if stamp_ok "plugin-$name" "$stamp" "$PULUMI_HOME/plugins/resource-$name-v$version/pulumi-resource-$name"; then
        log "provider $name $version: up to date"
        return
    fi
    log "building provider $name $version (../shared/third_party/$1)"
    timed "provider $name $version" "build_$name"
    "$BIN/pulumi" plugin rm resource "$name" "$version" --yes >/dev/null 2>&1 || true
    "$BIN/pulumi" plugin install resource "$name" "$version" --file "$SRC/pulumi-resource-$name"
    plugin_present "$name" "$version" || {
        log "provider $name $version: not installed in $PULUMI_HOME"
        exit 1
    }
    rm -rf "${SRC:?}/$1" "${SRC:?}/pulumi-resource-$name"
    [[ $name != libvirt ]] || rm -rf "${SRC:?}/terraform-provider-libvirt-0.8.1"
    printf '%s\n' "$stamp" >"$STAMPS/plugin-$name"
}
provider command "$COMMAND_VERSION" pulumi-command-1.2.1
provider libvirt "$LIBVIRT_VERSION" pulumi-libvirt-0.5.4 terraform-provider-libvirt-0.8.1
provider random "$RANDOM_VERSION" pulumi-random-4.21.1
provider tls "$TLS_VERSION" pulumi-tls-5.5.1

}
((use_system)) || build_engine

# actionlint is not part of the engine: `make actionlint` (scripts/install-actionlint.sh) installs it for lint.

# ---- summary --------------------------------------------------------------------------------------------
if ((use_system)); then
    PULUMI_HOME=$(cat "$TOOLS/system-pulumi-home") "$(cat "$TOOLS/system-pulumi")" plugin ls
else
    "$BIN/pulumi" version
    "$BIN/pulumi" plugin ls
fi
log "engine ready in $(($(date +%s) - script_start)) s; Go caches: $(du -sh "$(go env GOMODCACHE)" | cut -f1) modules," \
    "$(du -sh "$(go env GOCACHE)" | cut -f1) build cache"
