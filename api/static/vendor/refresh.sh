#!/usr/bin/env bash
# Refresh the dashboard's vendored libraries from the npm registry at the pinned versions below:
# fetch each package's tarball with `npm pack`, check it against the integrity recorded here (the
# registry's sha512), copy only the files the dashboard serves, and print their sha256 for VENDOR.md.
# To move to a new version: change the version and the integrity (`npm view PKG@VER dist.integrity`),
# run this, update VENDOR.md with what it prints, and run tests/api/test_dashboard*.py.
set -euo pipefail
cd "$(dirname "$0")"
LEAFLET=1.9.4
LEAFLET_SHA512=sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==
UPLOT=1.6.32
UPLOT_SHA512=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() {  # name version integrity -> unpacked into $tmp/name
  local tgz
  tgz=$(cd "$tmp" && npm pack "$1@$2" --silent)
  local got="sha512-$(openssl dgst -sha512 -binary "$tmp/$tgz" | base64 -w0)"
  [ "$got" = "$3" ] || { echo "$1@$2: integrity $got, expected $3" >&2; exit 1; }
  mkdir -p "$tmp/$1" && tar xzf "$tmp/$tgz" -C "$tmp/$1"
}
fetch leaflet "$LEAFLET" "$LEAFLET_SHA512"
fetch uplot "$UPLOT" "$UPLOT_SHA512"

rm -rf leaflet uplot
mkdir -p leaflet/images uplot
cp "$tmp"/leaflet/package/dist/{leaflet.js,leaflet.css} leaflet/
cp "$tmp"/leaflet/package/dist/images/*.png leaflet/images/
cp "$tmp"/leaflet/package/LICENSE leaflet/LICENSE
cp "$tmp"/uplot/package/dist/{uPlot.iife.min.js,uPlot.min.css} uplot/
cp "$tmp"/uplot/package/LICENSE uplot/LICENSE
find leaflet uplot -type f | sort | xargs sha256sum
