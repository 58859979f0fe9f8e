#!/usr/bin/env bash
# Helpers shared by scripts/build-engine.sh and scripts/build-pgpool2-exporter.sh (sourced, not run). The caller sets
# THIRD_PARTY (the pinned upstream trees), SRC (writable copies), STAMPS and FORCE.

log() { printf '==> %s\n' "$*"; }

# stamp_ok NAME STAMP OUTPUT: true when NAME was built from exactly STAMP and OUTPUT still exists.
stamp_ok() {
    local name=$1 stamp=$2 output=$3
    [[ $FORCE != 1 && -e "$output" && -f "$STAMPS/$name" && "$(cat "$STAMPS/$name")" == "$stamp" ]]
}

# tree_hash DIR: content hash of a source tree (its files, not their times).
tree_hash() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# fresh_copy NAME: $SRC/NAME as a writable copy of $THIRD_PARTY/NAME.
fresh_copy() {
    local name=$1
    [[ -d "$THIRD_PARTY/$name" ]] || {
        log "missing $THIRD_PARTY/$name (the upstream sources, see shared/third_party/README.md)"
        exit 1
    }
    rm -rf "${SRC:?}/$name"
    cp -a "$THIRD_PARTY/$name" "$SRC/$name"
    chmod -R u+w "$SRC/$name"
}
