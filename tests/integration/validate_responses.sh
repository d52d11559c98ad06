#!/bin/sh
# validate_responses.sh SOURCE_ROOT CACHE_DIR LOG: validates every response the integration
# tests recorded in LOG (THAWD_RESPONSE_LOG) against api-spec/openapi.yaml with Ajv
# (validate_responses.mjs). Runs after the other integration tests (meson: lowest priority,
# not parallel) and consumes LOG, so the next run starts empty. Prints TAP.
#
# ajv, ajv-formats and yaml are installed with `npm install --no-save` into CACHE_DIR (under
# the build dir) on first use. Without node/npm, or offline, the test is skipped.
set -u

src=$1
cache=$2
log=$3
spec="$src/api-spec/openapi.yaml"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "1..0 # SKIP node or npm not found"
    exit 0
fi
if [ ! -s "$log" ]; then
    echo "1..0 # SKIP no recorded responses in $log (run the integration suite first)"
    exit 0
fi
if [ ! -d "$cache/node_modules/ajv-formats" ] || [ ! -d "$cache/node_modules/yaml" ]; then
    mkdir -p "$cache" || exit 1
    if ! npm install --no-save --no-audit --no-fund --prefix "$cache" ajv@8.17.1 \
        ajv-formats@3.0.1 yaml@2.8.1 >"$cache/npm-install.log" 2>&1; then
        echo "1..0 # SKIP could not install ajv (see $cache/npm-install.log)"
        exit 0
    fi
fi
work="$log.validating"
mv "$log" "$work" || exit 1
VALIDATOR_MODULES="$cache/node_modules" node "$src/tests/integration/validate_responses.mjs" \
    "$spec" "$work"
rc=$?
mv "$work" "$log.last"
exit $rc
