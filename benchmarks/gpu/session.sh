#!/usr/bin/env bash
# The whole GPU session in one prepared command (a lent GPU is scarce: every part is time-boxed and
# writes as it goes, so a part that fails or runs out of time keeps what it measured and the next
# part still runs). From the repository root, on the GPU machine, after benchmarks/gpu/fetch_wheels.sh
# here:   bash benchmarks/gpu/session.sh OUT_DIR
# Parts, in order of value (the first three are the plan-holds-for-the-whole-run check; about 7 minutes
# with the installs on an H200; then today's stack, about 4 minutes more):
#   run_holds: the six reference entries, each probed by the cuda meter (the rehearsal) for a 16G card,
#     then trained by `planner run` under that cap (frozen + unfrozen epoch, validation, TTA), with the
#     estimate meter's peak beside, under both allocator configurations, 8 processes side by side
#     (run_holds.py -> run_holds.json);
#   oom_hygiene: an out-of-memory try and the planned one in the same process, both configurations
#     (oom_hygiene.py);
#   swinv2_points: swinv2_large_window12_192_22k at micro-batches 16 and 32 under the cap (points.json);
#   today_stack: timm's published recipe on today's stack for 64 models (the brackets 2022's device model
#     gets unsafely wrong first, convnet families, a stratified sample), each in its own process capped to
#     the 24 GiB card of the brackets, 5 side by side, product allocator, cudnn.benchmark on and off for
#     convnets (today_stack.py -> gpu_today_stack.json; about 250 s, stopped at its deadline with
#     what it measured: an estimated 45-65 models at 20-30 s per model and process).
# The default parts take about 12 minutes with the installs.
# environment.txt also records this host's benchmark for the host-time model (planner/probe/hostbench.py),
# so that fastai steps timed here can be compared with the machine that plans.
# With EXTRA_PARTS=1, the earlier session's parts follow: the cuda-meter plan of the reference set and
# real fastai steps (check.py), the published timm benchmark on this card (truth.py published),
# checkpointing's memory and time (truth.py checkpointing), one long `planner run` (run_check.py).
# Every part is a module run as `python3 -m benchmarks.gpu.NAME` from the repository root.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu_session_out}"
mkdir -p "$out"
# The checkout runs uninstalled: trainer/ is imported as planner_trainer (pyproject's package-dir), so a
# link gives it that name.
links=/tmp/planner_links
mkdir -p "$links" && ln -sfn "$PWD/trainer" "$links/planner_trainer"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v '/fit_planner-') 2>&1 | tail -3
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:$links:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch, timm, fastai, pydantic; print(sys.version.split()[0], torch.__version__, timm.__version__, fastai.__version__, pydantic.__version__, torch.backends.cudnn.version())"
  python3 -c "from planner.probe.hostbench import measure_host; print('host benchmark:', measure_host().to_dict())"
} 2>&1 | tee "$out/environment.txt"
step() {  # step NAME SECONDS COMMAND...: one part under a hard time limit, its log beside its results
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$out/$name.log" 2>&1
  echo "[$name] exit $? after $((SECONDS - started)) s" | tee -a "$out/steps.txt"
  tail -n 25 "$out/$name.log"
}
step run_holds "${RUN_HOLDS_SECONDS:-290}" python3 -m benchmarks.gpu.run_holds --out "$out" --budget 16G \
  --images 160 --parallel 8 --seconds "${RUN_HOLDS_BUDGET:-270}"
step oom_hygiene "${OOM_SECONDS:-40}" python3 -m benchmarks.gpu.oom_hygiene --out "$out/oom_hygiene.json"
step oom_hygiene_torch_defaults "${OOM_SECONDS:-40}" \
  env PYTORCH_CUDA_ALLOC_CONF= python3 -m benchmarks.gpu.oom_hygiene --out "$out/oom_hygiene_torch_defaults.json"
step swinv2_points "${POINTS_SECONDS:-70}" python3 -m benchmarks.gpu.run_holds --out "$out" --budget 16G \
  --points swinv2_large_window12_192_22k-squish480-192 16 32 --parallel 2 --seconds 60
step today_stack "${TODAY_STACK_SECONDS:-250}" python3 -m benchmarks.gpu.today_stack --out "$out" \
  --count "${TODAY_STACK_COUNT:-64}" --parallel 5 --seconds "${TODAY_STACK_BUDGET:-230}"
if [ "${EXTRA_PARTS:-0}" = 1 ]; then
  step gpu_check "${GPU_CHECK_SECONDS:-170}" python3 -m benchmarks.gpu.check --out "$out/gpu_check" --steps 12
  step published "${PUBLISHED_SECONDS:-150}" python3 -m benchmarks.gpu.truth published --out "$out" --seconds "${PUBLISHED_BUDGET:-105}"
  step checkpointing "${CHECKPOINTING_SECONDS:-60}" python3 -m benchmarks.gpu.truth checkpointing --out "$out" --seconds 35 --batches 32 64
  step run_check "${RUN_CHECK_SECONDS:-60}" python3 -m benchmarks.gpu.run_check --images 256 --epochs 1 --out "$out/gpu_run_check.json"
fi
# The pairs this session's cuda-meter plans and GPU runs recorded (planner calibrate's input).
pairs="${XDG_CACHE_HOME:-$HOME/.cache}/planner/calibration/pairs.jsonl"
if [ -f "$pairs" ]; then cp "$pairs" "$out/pairs_session.jsonl"; wc -l "$out/pairs_session.jsonl"; fi
