#!/usr/bin/env bash
# The whole suite in two streams at once: the control-plane suites (e2e, chaos), which mostly
# wait on the API server, the platform and pods, beside the unit and integration suites, which
# mostly compute. On two cores that halves the wall time. Each stream writes its own log (shown
# when it ends, so the two never interleave); the exit code is the first failing stream's.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${VPY:-.venv/bin/python}
LOGS=${TEST_LOG_DIR:-.test-logs}
mkdir -p "$LOGS"

run_stream() {  # name, pytest args...
    local name=$1
    shift
    "$PY" -m pytest -p no:cacheprovider "$@" >"$LOGS/$name.log" 2>&1
    echo $? >"$LOGS/$name.rc"
}

run_stream cluster tests/e2e tests/chaos &
cluster=$!
run_stream local tests/unit tests/integration &
local_stream=$!

status=0
for stream in local cluster; do
    if [ "$stream" = local ]; then wait "$local_stream"; else wait "$cluster"; fi
    rc=$(cat "$LOGS/$stream.rc")
    echo "=== tests: $stream stream (exit $rc) ==="
    cat "$LOGS/$stream.log"
    # pytest's 5 (nothing collected) is a failure here like any other.
    if [ "$rc" != 0 ] && [ "$status" = 0 ]; then status=$rc; fi
done
exit "$status"
