#!/usr/bin/env bash
# One case of the calibration study (docs/method.md, "Residual normalisation"): train the demo's networks on a
# data spec, the diffusion step once per variant, generate the whole test split and score it.
#
# usage: scripts/calibration_study.sh SPEC OUT VARIANT [--set key=value ...]
#   VARIANT  a name for the diffusion run (OUT/VARIANT/): its --set options say what differs, e.g.
#            scripts/calibration_study.sh data/spec.yaml study paper --set diffusion.residual_normalization=false
# The regression step is trained once per OUT (OUT/run/regression) and shared by every variant.
# Prints the corrdiff rows of the score table; OUT/VARIANT/scores.nc holds every score.
set -euo pipefail
spec=$(realpath "$1"); out=$2; variant=$3; shift 3
corrdiff=${CORRDIFF:-corrdiff}
python=${PYTHON:-python}
mkdir -p "$out/$variant"
out=$(realpath "$out")
"$python" - "$spec" "$out" <<'PY'
import sys, yaml
from corrdiff.demo import DEMO_CONFIG
spec, out = sys.argv[1:]
config = {"data": spec, "run_dir": f"{out}/run", **DEMO_CONFIG}
config["generate"] = dict(config["generate"], split="test")
open(f"{out}/config.yaml", "w").write(yaml.safe_dump(config, sort_keys=False))
PY
config=$out/config.yaml
[ -e "$out/run/regression/checkpoints/latest" ] || "$corrdiff" train regression "$config" --quiet
"$corrdiff" train diffusion "$config" --quiet --resume --set run_dir="$out/$variant/run" \
    --set diffusion.regression_checkpoint="$out/run/regression" "$@"
"$corrdiff" generate "$config" --quiet --overwrite --out "$out/$variant/ensemble.nc" \
    --checkpoint-regression "$out/run/regression" --checkpoint-diffusion "$out/$variant/run/diffusion" \
    --set run_dir="$out/$variant/run" "$@"
"$corrdiff" score "$out/$variant/ensemble.nc" --truth "$spec" --split test --quiet --overwrite \
    --out "$out/$variant/scores.nc" | tee "$out/$variant/scores.txt"
