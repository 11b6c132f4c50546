#!/usr/bin/env bash
# The whole GPU session in one prepared command (a lent GPU is scarce: every part is time-boxed and
# writes as it goes, so a part that fails or runs out of time keeps what it measured and the next
# part still runs). From the repository root, on the GPU machine, after benchmarks/fetch_gpu_wheels.sh
# here:   bash benchmarks/gpu_session.sh OUT_DIR
# Parts: the product's cuda-meter probe of the reference set for a 16G card and real fastai steps at
# the chosen and next micro-batch (gpu_check.py); the published timm benchmark reproduced on this card
# (gpu_truth.py published); checkpointing's memory and time (gpu_truth.py checkpointing); one entry
# trained end to end by `planner run` under the 16G cap (gpu_run_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_session_out}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v '/planner-') 2>&1 | tail -3
  export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch, timm, fastai, pydantic; print(sys.version.split()[0], torch.__version__, timm.__version__, fastai.__version__, pydantic.__version__, torch.backends.cudnn.version())"
} 2>&1 | tee "$out/environment.txt"
step() {  # step NAME SECONDS COMMAND...: one part under a hard time limit, its log beside its results
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$out/$name.log" 2>&1
  echo "[$name] exit $? after $((SECONDS - started)) s" | tee -a "$out/steps.txt"
  tail -n 25 "$out/$name.log"
}
step gpu_check "${GPU_CHECK_SECONDS:-170}" python3 benchmarks/gpu_check.py --out "$out/gpu_check" --steps 12
step published "${PUBLISHED_SECONDS:-150}" python3 benchmarks/gpu_truth.py published --out "$out" --seconds "${PUBLISHED_BUDGET:-105}"
step checkpointing "${CHECKPOINTING_SECONDS:-60}" python3 benchmarks/gpu_truth.py checkpointing --out "$out" --seconds 35 --batches 32 64
step run_check "${RUN_CHECK_SECONDS:-60}" python3 benchmarks/gpu_run_check.py --images 256 --epochs 1 --out "$out/gpu_run_check.json"
