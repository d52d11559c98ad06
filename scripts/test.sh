#!/bin/sh
# test.sh: installs what is missing, builds thawd with its tests (debugoptimized, warnings
# are errors) and runs every test suite. Ends with one line "N passed, N failed".
# Exit status 0 only when nothing failed.
set -eu
cd "$(dirname "$0")/.."

sh scripts/setup.sh
if [ ! -f build/build.ninja ]; then
    meson setup build >/dev/null
fi
if ! meson compile -C build; then
    echo "0 passed, 1 failed"
    exit 1
fi

status=0
meson test -C build --print-errorlogs --num-processes 2 || status=$?

# One line summary over every test meson ran (from its machine-readable log).
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
