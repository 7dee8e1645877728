#!/usr/bin/env bash
# `make bench`: every benchmark, each printing its table and writing benchmarks/results/<name>.json.
# The comparisons with the reference run in .venv-bench (built by setup_venv.sh, with PhysicsNeMo); if it
# cannot be built, they run in the test .venv and time corrdiff alone. BENCH_ARGS is passed to each
# script (BENCH_ARGS=--quick for a smoke run).
set -uo pipefail
cd "$(dirname "$0")/.."

if bash benchmarks/setup_venv.sh; then
    PY=${BENCH_VENV:-.venv-bench}/bin/python
else
    echo "!! could not build .venv-bench: the reference comparison is skipped" >&2
    make -s venv
    PY=.venv/bin/python
fi
failed=0
for bench in bench_unet bench_sampling bench_student bench_training bench_loader bench_scoring bench_patching bench_indices bench_netcdf bench_regression_cache; do
    echo
    echo "== $bench"
    # shellcheck disable=SC2086
    "$PY" "benchmarks/$bench.py" ${BENCH_ARGS:-} || { echo "!! $bench failed" >&2; failed=1; }
done
exit $failed
