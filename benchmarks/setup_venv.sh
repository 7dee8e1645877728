#!/usr/bin/env bash
# Builds .venv-bench (CUDA torch, nvidia-physicsnemo, corrdiff) if it is missing or incomplete.
# Separate from .venv because the reference package wants a newer torch than corrdiff's pin,
# and because the CUDA wheels (~6 GB) have no place in the test environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-.venv-bench}
PY=$VENV/bin/python
STAMP=$VENV/.installed
TORCH_PIN="torch==2.14.1"
TORCHVISION_PIN="torchvision==0.29.1"

if [[ -f $STAMP && $STAMP -nt pyproject.toml ]]; then
    exit 0
fi

echo "== building $VENV (first run downloads the CUDA build of torch, about 6 GB)"
[[ -x $PY ]] || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
# torch and torchvision by exact pin, together with the reference package, so the resolver
# cannot swap torch for another version to suit physicsnemo's own requirements.
"$PY" -m pip install -q "$TORCH_PIN" "$TORCHVISION_PIN" nvidia-physicsnemo
# corrdiff pins torch==2.13.0, so install it without dependencies and add the others by hand,
# read from pyproject.toml so this list never drifts from the package's own.
"$PY" -m pip install -q --no-deps -e .
mapfile -t deps < <("$PY" - <<'PYEOF'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower()
    if name not in {"torch", "torchvision"}:
        print(dep)
PYEOF
)
echo "   (pip may report that corrdiff wants torch==2.13.0: expected here, both contenders run on $TORCH_PIN)"
"$PY" -m pip install -q "$TORCH_PIN" "${deps[@]}"
"$PY" -c "import torch, physicsnemo, corrdiff; print('torch', torch.__version__, '| physicsnemo', physicsnemo.__version__)"
touch "$STAMP"
