#!/bin/bash
# promtool for the unit tests (`promtool check` / `promtool test rules` of the rendered alert rules): taken from
# Debian's prometheus package, the same version the backup repository host runs. Only the binary is extracted:
# installing the package would start a Prometheus server on this machine.
set -euo pipefail
dest=${1:-.tools/bin/promtool}
if [ -x "$dest" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    apt-get update -q >/dev/null
    (cd "$tmp" && apt-get download prometheus >/dev/null)
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
install -D -m 0755 "$tmp/root/usr/bin/promtool" "$dest"
echo "promtool: $("$dest" --version 2>&1 | head -1) -> $dest"
