#!/bin/sh
# Refresh the chat page's vendored front-end libraries in static/vendor/.
#
# The page loads no CDN and needs no build step: the few libraries it uses are
# copied from the npm registry into the repository, with their licences. To
# upgrade one, change its version and integrity below (`npm view PKG@VER
# dist.integrity`), run this script, try the page, commit static/vendor/.
#
# Needs npm (only for `npm pack`: nothing is installed, no package script runs).
set -eu

MARKED_VERSION=18.2.1
MARKED_INTEGRITY=sha512-ii4bxCTCqqwpT86XZWgJNs+ZnAIZksmLGYMViWA7PDIXYIeNo1x6cDdX3JOip9NM/cI6p8z57FxliACboTruMA==
DOMPURIFY_VERSION=3.4.18
DOMPURIFY_INTEGRITY=sha512-ofe3wI/uNm68HInABYFJYqQxRw1EaKAjNdrFVKqjUY+UZurvNd2L/HuQe097s/4RivWiZyP6tT7aoT8atjfhwg==

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
DEST="$ROOT/static/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# fetch NAME VERSION INTEGRITY: download the tarball, check it, unpack it to $WORK/NAME.
fetch() {
    name=$1 version=$2 integrity=$3
    (cd "$WORK" && npm pack --silent --ignore-scripts "$name@$version" >/dev/null)
    tarball="$WORK/$name-$version.tgz"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | openssl base64 -A)"
    if [ "$actual" != "$integrity" ]; then
        echo "$name@$version: integrity mismatch (expected $integrity, got $actual)" >&2
        exit 1
    fi
    mkdir -p "$WORK/$name"
    tar -xzf "$tarball" -C "$WORK/$name"
}

fetch marked "$MARKED_VERSION" "$MARKED_INTEGRITY"
fetch dompurify "$DOMPURIFY_VERSION" "$DOMPURIFY_INTEGRITY"

rm -rf "$DEST/marked" "$DEST/dompurify"
mkdir -p "$DEST/marked" "$DEST/dompurify"

cp "$WORK/marked/package/lib/marked.umd.js" "$WORK/marked/package/lib/marked.umd.js.map" \
   "$WORK/marked/package/LICENSE" "$DEST/marked/"
cp "$WORK/dompurify/package/dist/purify.min.js" "$WORK/dompurify/package/dist/purify.min.js.map" \
   "$WORK/dompurify/package/LICENSE" "$DEST/dompurify/"
# DOMPurify is dual-licensed (Apache-2.0 or MPL-2.0); keep both texts.
if [ -f "$WORK/dompurify/package/LICENSE-MPL" ]; then
    cp "$WORK/dompurify/package/LICENSE-MPL" "$DEST/dompurify/"
fi

cat > "$DEST/VERSIONS" <<EOF
# Written by scripts/vendor_frontend.sh; do not edit by hand.
marked $MARKED_VERSION $MARKED_INTEGRITY MIT
dompurify $DOMPURIFY_VERSION $DOMPURIFY_INTEGRITY Apache-2.0 OR MPL-2.0
EOF

echo "vendored marked $MARKED_VERSION and dompurify $DOMPURIFY_VERSION into static/vendor/"
