#!/usr/bin/env bash
# The crash-torture test at full length (issue 16): vcmad killed with SIGKILL at a
# random moment of a mixed workload CYCLES times (default 200), the state directory it
# left checked after each crash, and the restarted vcmad checked taking that state back
# (tests/integration/test_crash_torture.py says what). MODE reattach (the default): one
# set of clients reattaches after every restart and goes on, its regions and pages
# checked; MODE reclaim: the clients stop with vcmad and the restarted vcmad reclaims it
# all after its grace period. The suite runs 20 cycles of each; this runs as many as
# asked, from SEED (default 1): a failing cycle prints its seed, and
# `run-torture.sh 1 SEED [MODE]` reruns it alone (in reattach mode, with that cycle's
# delay and seed first). About 1-2 s per cycle on 2 cores.
#   run-torture.sh [CYCLES [SEED [MODE]]]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --for tests
scripts/build.sh build-test -Dwerror=true
b=build-test
PYTHONPATH=tests/integration PYTHONDONTWRITEBYTECODE=1 exec python3 tests/integration/test_crash_torture.py \
	"$b/hv/vcmad" "$b/tools/vcma-simvm" "$b/tools/vcmactl" "$b/tests/integration/torture_guest" \
	"$b/tests/integration/state_dump" "${1:-200}" "${2:-1}" "${3:-reattach}"
