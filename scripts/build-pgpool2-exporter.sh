#!/usr/bin/env bash
# Build pgpool2_exporter (Prometheus exporter for pgpool-II) and stage upstream's Grafana dashboard, for `pulumi up`
# to upload to the servers (monitoring.pgpoolExporterBinary, monitoring.grafanaDashboard in the stack config).
#
#   bash scripts/build-pgpool2-exporter.sh   # idempotent: skipped when the stamp (sources + Go) matches
#
# The Go module proxy refuses github.com/pgpool/pgpool2_exporter itself; its pinned upstream tree (v1.2.2, MIT) is
# in ../shared/third_party and is built from a writable copy; its dependencies come from the proxy. The binary is
# static (CGO off): it runs on any x86-64 Debian/Ubuntu release the program supports.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THIRD_PARTY=${THIRD_PARTY:-$(cd "$ROOT/.." && pwd)/shared/third_party}
TREE=pgpool2_exporter-1.2.2
TOOLS="$ROOT/.tools"
SRC="$TOOLS/src"
STAMPS="$TOOLS/stamps"
FORCE=${FORCE:-0}
BIN="$TOOLS/bin/pgpool2_exporter"
SHARE="$TOOLS/share/pgpool2_exporter"
# shellcheck source=scripts/build-lib.sh
source "$ROOT/scripts/build-lib.sh" # log, stamp_ok, tree_hash, fresh_copy

mkdir -p "$TOOLS/bin" "$SRC" "$STAMPS" "$SHARE"
exec 9>"$TOOLS/.pgpool2-exporter.lock"
flock 9

[[ -d "$THIRD_PARTY/$TREE" ]] || {
    log "missing $THIRD_PARTY/$TREE (the upstream sources, see shared/third_party/README.md)"
    exit 1
}
stamp="$TREE $(go env GOVERSION) $(tree_hash "$THIRD_PARTY/$TREE")"
if stamp_ok pgpool2_exporter "$stamp" "$BIN" && [[ -f $SHARE/pgpool2.json ]]; then
    log "pgpool2_exporter: up to date ($BIN)"
    exit 0
fi

start=$(date +%s)
log "building pgpool2_exporter from ../shared/third_party/$TREE"
fresh_copy "$TREE"
src="$SRC/$TREE"
version=$(cat "$src/VERSION")
(cd "$src" && GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -p=2" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$version" \
    -o "$BIN.tmp" ./cmd/pgpool2_exporter)
mv "$BIN.tmp" "$BIN"
# Upstream's dashboard, as published (users import it into their Grafana), with the licence it comes under.
install -m 0644 "$src/dashboards/pgpool2.json" "$SHARE/pgpool2.json"
install -m 0644 "$src/LICENSE" "$SHARE/LICENSE"
rm -rf "$src"
printf '%s\n' "$stamp" >"$STAMPS/pgpool2_exporter"
log "pgpool2_exporter $version built in $(($(date +%s) - start)) s: $BIN ($(du -h "$BIN" | cut -f1)), $SHARE/pgpool2.json"
