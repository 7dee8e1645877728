#!/usr/bin/env bash
# `make gpu-check`: everything that needs a GPU, in one command that fits ten minutes on one H100/H200.
#   1. builds what it needs (.venv-bench with the CUDA torch and PhysicsNeMo, pytest in it) or reports why not;
#   2. probes the optional pieces (CUDA, torch.compile, Apex) and reports each;
#   3. runs the GPU test subset (CUDA graphs, compile, bf16 against fp32 tolerances, autocast smoke runs);
#   4. measures what decides fast_path.py's per-device tables (channels-last, and the fused GroupNorm+SiLU compiled),
#      then the model benchmarks at the paper configuration (448², paper preset), trimmed to the time budget
#      (GPU_CHECK_FULL=1: the whole `make bench` at its defaults instead, which takes longer);
#   5. writes the tables, with the device name and date, into docs/benchmarks.md ("GPU results").
# Every step has a time limit from what is left of GPU_CHECK_BUDGET_S (default 570 s); a step that fails or
# is skipped is reported in the document and the summary, and the others still run. Exit status 1 if any failed.
#
# --dry-run: the same plumbing on the CPU at toy sizes (no nvidia-smi, no build), the document written to a
# copy in a temporary folder: what can be checked of this script without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
BUDGET=${GPU_CHECK_BUDGET_S:-570}
START=$SECONDS
if (( DRY )); then
    WORK=$(mktemp -d)
    RESULTS=$WORK/results
    DOC=$WORK/benchmarks.md
    cp docs/benchmarks.md "$DOC"
    DEVICE=cpu
else
    RESULTS=benchmarks/results/gpu-check
    DOC=docs/benchmarks.md
    DEVICE=cuda
fi
mkdir -p "$RESULTS"
LOG=$RESULTS/steps.tsv
: > "$LOG"
export CORRDIFF_BENCH_RESULTS=$RESULTS
failed=0

# record STATUS STEP NOTE: one line of the step log the report is written from
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$LOG"; echo "-- $1: $2${3:+ ($3)}"; }

# step NAME LIMIT_S COMMAND...: run with a limit cut to the budget left; record how it ended
step() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - (SECONDS - START) - 20 ))  # 20 s kept for the report
    (( limit > left )) && limit=$left
    if (( limit < 10 )); then
        record skipped "$name" "no time left in the ${BUDGET} s budget"
        return 0
    fi
    echo
    echo "== $name (at most ${limit} s)"
    local began=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" "$@"
    local rc=$?
    local took=$(( SECONDS - began ))
    case $rc in
        0) record ok "$name" "${took} s" ;;
        124|137) record failed "$name" "timed out after ${limit} s"; failed=1 ;;
        *) record failed "$name" "exit status $rc after ${took} s"; failed=1 ;;
    esac
}

# 1. what to run with
PY=${BENCH_VENV:-.venv-bench}/bin/python
if (( DRY )); then
    record ok "dry run on the CPU" "toy sizes; document written to $DOC"
else
    if gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1) && [[ -n $gpu ]]; then
        record ok "GPU visible" "$gpu"
    else
        record failed "GPU visible" "nvidia-smi found no GPU"
        failed=1
    fi
    step "build .venv-bench (CUDA torch, PhysicsNeMo)" 300 bash benchmarks/setup_venv.sh
fi
if ! "$PY" -c "import torch, corrdiff" 2>/dev/null; then
    record failed "python environment" "$PY cannot import torch and corrdiff; falling back to .venv (no reference)"
    failed=1
    make -s venv >/dev/null 2>&1
    PY=.venv/bin/python
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then
    pin=$(grep -o '"pytest==[^"]*"' pyproject.toml | tr -d '"')
    "$PY" -m pip install -q "${pin:-pytest}" >/dev/null 2>&1 || record failed "pytest in $PY" "could not install ${pin:-pytest}"
fi

# 2. the optional pieces, each reported (none of them stops the check)
probe() { record "$1" "$2" "$3"; }
facts=$("$PY" - "$DEVICE" <<'PYEOF' 2>&1
import sys, torch
device = sys.argv[1]
print("ok\ttorch\t" + torch.__version__ + (f", CUDA {torch.version.cuda}" if torch.version.cuda else ", CPU build"))
if device == "cuda":
    print(("ok" if torch.cuda.is_available() else "failed") + "\tCUDA in torch\t"
          + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "torch.cuda.is_available() is False"))
try:
    import physicsnemo
    print(f"ok\tPhysicsNeMo (the reference)\t{physicsnemo.__version__}")
except Exception as err:
    print(f"missing\tPhysicsNeMo (the reference)\t{type(err).__name__}: {err}; corrdiff is timed alone")
try:
    import apex.contrib.group_norm  # noqa: F401
    print("ok\tApex GroupNorm (reference fast)\timportable")
except Exception as err:
    print(f"missing\tApex GroupNorm (reference fast)\t{type(err).__name__}; the reference runs torch's GroupNorm")
try:
    f = torch.compile(lambda x: torch.nn.functional.silu(x) * 2)
    f(torch.ones(8, device=device if device != "cuda" or torch.cuda.is_available() else "cpu"))
    print("ok\ttorch.compile (inductor)\tcompiles and runs")
except Exception as err:
    print(f"missing\ttorch.compile (inductor)\t{type(err).__name__}: {str(err).splitlines()[0][:200]}")
PYEOF
)
while IFS=$'\t' read -r status name note; do
    [[ -n ${note:-} ]] && probe "$status" "$name" "$note"
done <<< "$facts"
grep -q $'^failed\tCUDA in torch' "$LOG" && failed=1

# 3. the GPU test subset (CUDA-only tests skip themselves elsewhere)
TESTS=(tests/test_fast_path.py tests/test_compile_graph.py tests/benchmarks/test_bench_contenders.py tests/models/test_fused_norm.py)
step "GPU test subset (CUDA graphs, compile graphs, bf16 tolerances, autocast smoke runs)" 150 \
    env OMP_NUM_THREADS=4 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
record "not covered" "DDP on NCCL" "the DDP tests run on gloo/CPU (tests/training/test_ddp_sync.py); no NCCL test yet"

# 4. the benchmarks
if (( DRY )); then
    UNET=(--device cpu --sizes 16 --batches 1 --repeats 1)
    LAYOUT=(--device cpu --size 16 --batch 1 --repeats 1)
    FUSED=(--device cpu --size 16 --batch 1 --repeats 1 --preset tiny --kinds forward)
    SAMPLING=(--device cpu --size 16 --batches 1 --steps 2 --repeats 1)
    STUDENT=(--device cpu --quick)
    TRAINING=(--device cpu --size 16 --batch 2 --repeats 1 --workers 0)
else
    # Trimmed to the budget: 448² at batches 1 and 4, fewer turns and 8 Heun steps (ratios are per network
    # evaluation, the same for every contender); compile only where it is used for real (sampling).
    UNET=(--device cuda --sizes 448 --batches 1 4 --repeats 3)
    LAYOUT=(--device cuda --size 448 --batch 4 --repeats 5)
    # Both contenders compiled (the fused norm pays only there); the sampling forward only, to fit the budget.
    FUSED=(--device cuda --size 448 --batch 4 --repeats 5 --kinds forward)
    SAMPLING=(--device cuda --size 448 --batches 1 4 --steps 8 --repeats 1 --compile)
    # Teacher (7 and 35 NFE) against the student (1, 2, 4 NFE), one member, paper preset at 448².
    STUDENT=(--device cuda --preset paper --sizes 448 --repeats 3)
    TRAINING=(--device cuda --size 448 --batch 4 --repeats 4)
fi
# The two measurements that decide fast_path.py's per-device tables run in both modes (`make bench` has neither).
step "channels-last against NCHW (bench_layout.py)" 60 "$PY" benchmarks/bench_layout.py "${LAYOUT[@]}"
step "fused GroupNorm+SiLU against plain, compiled (bench_layout.py --fused-norm)" 120 \
    "$PY" benchmarks/bench_layout.py --fused-norm "${FUSED[@]}"
if [[ ${GPU_CHECK_FULL:-0} == 1 && $DRY == 0 ]]; then
    BUDGET=100000 step "make bench (full, defaults)" 100000 make -s bench
else
    step "UNet forward, forward+backward (bench_unet.py)" 150 "$PY" benchmarks/bench_unet.py "${UNET[@]}"
    step "sampling per member (bench_sampling.py)" 170 "$PY" benchmarks/bench_sampling.py "${SAMPLING[@]}"
    step "training throughput (bench_training.py)" 90 "$PY" benchmarks/bench_training.py "${TRAINING[@]}"
    step "teacher against student per member (bench_student.py)" 90 "$PY" benchmarks/bench_student.py "${STUDENT[@]}"
fi

# 5. the document
echo
if python3 benchmarks/gpu_report.py "$RESULTS" "$LOG" "$DOC"; then
    echo "== done in $(( SECONDS - START )) s; steps: $LOG; tables: $DOC"
else
    echo "!! could not write $DOC" >&2
    failed=1
fi
exit $failed
