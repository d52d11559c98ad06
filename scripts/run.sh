#!/bin/sh
# run.sh: quick start. Installs what is missing, builds thawd (release) and starts the daemon
# on its embedded defaults: SQLite and files under ./thawd-data, listening on 127.0.0.1:8080.
# Extra arguments are passed to the daemon (see `build-release/server/thawd --help`).
set -eu
cd "$(dirname "$0")/.."

sh scripts/setup.sh
log=$(mktemp)
# Quiet when all goes well; the whole build output when it does not.
if [ ! -f build-release/build.ninja ]; then
    meson setup build-release --buildtype=release -Dtests=false >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
meson compile -C build-release >"$log" 2>&1 || { cat "$log"; rm -f "$log"; exit 1; }
rm -f "$log"

cat <<'MSG'
thawd: starting on http://127.0.0.1:8080 (data in ./thawd-data; Ctrl-C stops it cleanly)
try, from another terminal:
  curl -s -X POST http://127.0.0.1:8080/v1/jobs -H 'Content-Type: application/json' \
       -d '{"model":{"arch":"mlp","hidden":[128]},"data":{"source":"fashion-mnist"},"stages":[{"op":"fit_one_cycle","epochs":1,"lr_max":0.003},{"op":"save","name":"final"}]}'
then:   curl -s http://127.0.0.1:8080/v1/jobs/1
MSG
exec build-release/server/thawd serve "$@"
