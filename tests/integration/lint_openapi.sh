#!/bin/sh
# lint_openapi.sh SOURCE_ROOT CACHE_DIR: lint api-spec/openapi.yaml with Redocly CLI and
# check that api-spec/examples pairs up with the spec's operations. Prints TAP.
#
# Redocly CLI is installed with `npm install --no-save` into CACHE_DIR (under the build dir)
# on first use; the npm registry is the only network access. Without npm, or when the
# install fails (offline), the test is skipped, not failed.
set -u

src=$1
cache=$2
spec="$src/api-spec/openapi.yaml"
examples="$src/api-spec/examples"
config="$src/tests/integration/redocly.yaml"
version=2.77.0

if ! command -v npm >/dev/null 2>&1; then
    echo "1..0 # SKIP npm not found"
    exit 0
fi

bin="$cache/node_modules/.bin/redocly"
if [ ! -x "$bin" ]; then
    mkdir -p "$cache" || exit 1
    if ! npm install --no-save --no-audit --no-fund --prefix "$cache" "@redocly/cli@$version" \
        >"$cache/npm-install.log" 2>&1; then
        echo "1..0 # SKIP could not install @redocly/cli@$version (see $cache/npm-install.log)"
        exit 0
    fi
fi

n=0
failed=0
check() { # check OK|FAIL description
    n=$((n + 1))
    if [ "$1" = OK ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=1
    fi
}

out="$cache/lint.out"
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1 \
    "$bin" lint --config "$config" --format stylish "$spec" >"$out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
    check OK "redocly lint api-spec/openapi.yaml"
else
    check FAIL "redocly lint api-spec/openapi.yaml (exit $rc)"
fi
# The lint output as TAP comments, minus the Node.js deprecation banner.
grep -v '[║╔╚]' "$out" | grep -v '^ *$' | sed 's/^/# /'

# Every request example has a response example and names an operationId of the spec, and
# the spec references both files.
found=0
for req in "$examples"/*.request.json; do
    [ -e "$req" ] || continue
    found=1
    op=$(basename "$req" .request.json)
    if [ -f "$examples/$op.response.json" ]; then
        check OK "$op: response example exists"
    else
        check FAIL "$op: response example exists"
    fi
    if grep -q "operationId: $op\$" "$spec"; then
        check OK "$op: is an operationId of openapi.yaml"
    else
        check FAIL "$op: is an operationId of openapi.yaml"
    fi
    if grep -q "examples/$op.response.json" "$spec"; then
        check OK "$op: openapi.yaml references its response example"
    else
        check FAIL "$op: openapi.yaml references its response example"
    fi
done
if [ $found -eq 1 ]; then
    check OK "api-spec/examples has request examples"
else
    check FAIL "api-spec/examples has request examples"
fi
for resp in "$examples"/*.response.json; do
    [ -e "$resp" ] || continue
    op=$(basename "$resp" .response.json)
    if [ -f "$examples/$op.request.json" ]; then
        check OK "$op: request example exists"
    else
        check FAIL "$op: request example exists"
    fi
done

echo "1..$n"
exit $failed
