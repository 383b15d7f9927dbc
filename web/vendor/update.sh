#!/bin/sh
# Re-fetch the vendored browser builds from npm (`npm pack`, no install, no build).
# Bump a version here, run `sh web/vendor/update.sh`, check the client, commit the result.
set -eu
GRAPHQL_WS_VERSION=6.4.2
BLURHASH_VERSION=2.0.5

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

npm pack --silent "graphql-ws@$GRAPHQL_WS_VERSION" "blurhash@$BLURHASH_VERSION" >/dev/null
mkdir gw bh
tar xzf "graphql-ws-$GRAPHQL_WS_VERSION.tgz" -C gw
tar xzf "blurhash-$BLURHASH_VERSION.tgz" -C bh

# graphql-ws: the ESM client entry and the shared chunk it imports (no other imports).
rm -rf "$here/graphql-ws"
mkdir -p "$here/graphql-ws"
cp gw/package/dist/client.js "$here/graphql-ws/client.js"
for chunk in $(grep -o "common-[A-Za-z0-9_-]*\.js" gw/package/dist/client.js | sort -u); do
  cp "gw/package/dist/$chunk" "$here/graphql-ws/$chunk"
done
cp gw/package/LICENSE.md "$here/graphql-ws/LICENSE.md"
echo "graphql-ws $GRAPHQL_WS_VERSION (npm), dist/client.js and its chunk" > "$here/graphql-ws/VERSION"

# blurhash: the ESM build. The npm package ships no licence file; its package.json says
# MIT and the upstream repository's License.md is the MIT text below.
rm -rf "$here/blurhash"
mkdir -p "$here/blurhash"
cp bh/package/dist/esm/index.js "$here/blurhash/blurhash.js"
license=$(node -e 'process.stdout.write(require("./bh/package/package.json").license)' 2>/dev/null \
  || sed -n 's/.*"license": *"\([^"]*\)".*/\1/p' bh/package/package.json)
[ "$license" = "MIT" ] || { echo "blurhash licence changed to $license: check it" >&2; exit 1; }
cat > "$here/blurhash/LICENSE" <<'LICENSE'
MIT License

Copyright (c) 2018 Wolt Enterprises

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENSE
echo "blurhash $BLURHASH_VERSION (npm), dist/esm/index.js" > "$here/blurhash/VERSION"
echo "vendored: graphql-ws $GRAPHQL_WS_VERSION, blurhash $BLURHASH_VERSION"
