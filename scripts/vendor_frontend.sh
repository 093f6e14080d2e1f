#!/bin/sh
# Refresh the chat page's vendored front-end libraries in static/vendor/, and
# the browser tests' axe-core in tests/browser/vendor/ (never served to users).
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
# highlight.js's browser build (the npm package "highlight.js" ships none since
# v11): its common languages, and its a11y themes for light and dark (WCAG AA contrast).
HLJS_VERSION=11.12.0
HLJS_INTEGRITY=sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH0zgiNDEGjpDw==
# axe-core: the accessibility checks of the browser tests only.
AXE_VERSION=4.11.0
AXE_INTEGRITY=sha512-ilYanEU8vxxBexpJd8cWM4ElSQq4QctCLKih0TSfjIfCQTeyH/6zVrmIJfLPrKTKJRbiG+cfnZbQIjAlJmF1jQ==

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
DEST="$ROOT/static/vendor"
TEST_DEST="$ROOT/tests/browser/vendor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# fetch NAME VERSION INTEGRITY: download the tarball, check it, unpack it to $WORK/NAME.
# A scoped package (@scope/name) is unpacked to $WORK/LOCAL, its 4th argument.
fetch() {
    name=$1 version=$2 integrity=$3 local=${4:-$1}
    (cd "$WORK" && npm pack --silent --ignore-scripts "$name@$version" >/dev/null)
    tarball="$WORK/$local-$version.tgz"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | openssl base64 -A)"
    if [ "$actual" != "$integrity" ]; then
        echo "$name@$version: integrity mismatch (expected $integrity, got $actual)" >&2
        exit 1
    fi
    mkdir -p "$WORK/$local"
    tar -xzf "$tarball" -C "$WORK/$local"
}

fetch marked "$MARKED_VERSION" "$MARKED_INTEGRITY"
fetch dompurify "$DOMPURIFY_VERSION" "$DOMPURIFY_INTEGRITY"
fetch @highlightjs/cdn-assets "$HLJS_VERSION" "$HLJS_INTEGRITY" highlightjs-cdn-assets
fetch axe-core "$AXE_VERSION" "$AXE_INTEGRITY"

rm -rf "$DEST/marked" "$DEST/dompurify" "$DEST/highlight" "$TEST_DEST/axe-core"
mkdir -p "$DEST/marked" "$DEST/dompurify" "$DEST/highlight" "$TEST_DEST/axe-core"

cp "$WORK/marked/package/lib/marked.umd.js" "$WORK/marked/package/lib/marked.umd.js.map" \
   "$WORK/marked/package/LICENSE" "$DEST/marked/"
cp "$WORK/dompurify/package/dist/purify.min.js" "$WORK/dompurify/package/dist/purify.min.js.map" \
   "$WORK/dompurify/package/LICENSE" "$DEST/dompurify/"
# DOMPurify is dual-licensed (Apache-2.0 or MPL-2.0); keep both texts.
if [ -f "$WORK/dompurify/package/LICENSE-MPL" ]; then
    cp "$WORK/dompurify/package/LICENSE-MPL" "$DEST/dompurify/"
fi

HLJS="$WORK/highlightjs-cdn-assets/package"
cp "$HLJS/highlight.min.js" "$HLJS/LICENSE" "$DEST/highlight/"
cp "$HLJS/styles/a11y-light.min.css" "$HLJS/styles/a11y-dark.min.css" "$DEST/highlight/"
cp "$WORK/axe-core/package/axe.min.js" "$WORK/axe-core/package/LICENSE" "$TEST_DEST/axe-core/"
if [ -f "$WORK/axe-core/package/LICENSE-3RD-PARTY.txt" ]; then
    cp "$WORK/axe-core/package/LICENSE-3RD-PARTY.txt" "$TEST_DEST/axe-core/"
fi

cat > "$DEST/VERSIONS" <<EOF
# Written by scripts/vendor_frontend.sh; do not edit by hand.
marked $MARKED_VERSION $MARKED_INTEGRITY MIT
dompurify $DOMPURIFY_VERSION $DOMPURIFY_INTEGRITY Apache-2.0 OR MPL-2.0
highlight.js $HLJS_VERSION $HLJS_INTEGRITY BSD-3-Clause (npm: @highlightjs/cdn-assets)
EOF
cat > "$TEST_DEST/VERSIONS" <<EOF
# Written by scripts/vendor_frontend.sh; do not edit by hand. For the browser tests only.
axe-core $AXE_VERSION $AXE_INTEGRITY MPL-2.0
EOF

echo "vendored marked $MARKED_VERSION, dompurify $DOMPURIFY_VERSION, highlight.js $HLJS_VERSION into static/vendor/"
echo "vendored axe-core $AXE_VERSION into tests/browser/vendor/"
