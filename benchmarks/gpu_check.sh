#!/usr/bin/env bash
# Run the one-shot GPU check on a CUDA machine, from the repository root:
#   bash benchmarks/gpu_check.sh [gpu_check.py options]
# The GPU machine has torch, timm, pandas, rich, typer and nvidia-ml-py but no network, fastai or
# pydantic: those travel as wheels in .whl/, made beforehand here by benchmarks/fetch_gpu_wheels.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
out="${OUT:-gpu_check_out}"
python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out.log"
