#!/usr/bin/env bash
# Issue 10's GPU session, one prepared command (from the repository root, on the GPU machine, after
# `pip download` of pydantic's wheels into .whl/ here, as benchmarks/fetch_gpu_wheels.sh does):
#   bash benchmarks/gpu_estimate_check.sh OUT_DIR
# In parallel: (1) real CUDA peaks of the published 2022 recipe for a sample of models, explicit and
# fused attention (gpu_published_peaks.py, on the GPU); (2) the device-free estimate of every published
# model (published_gpu.py, fake steps on this machine's CPUs; both precisions). Each part writes as it
# goes and is time-boxed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_estimate_out}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore OMP_NUM_THREADS=1
python3 -c "import sys, torch, timm; print(sys.version.split()[0], torch.__version__, timm.__version__, torch.cuda.get_device_name(0), torch.backends.cudnn.version())" | tee "$out/environment.txt"
limit="${FAKE_SECONDS:-430}"
timeout "$limit" python3 benchmarks/published_gpu.py --jobs 8 --fit --json "$out/published_fake_cuda_fp16.json" > "$out/fake_cuda_fp16.log" 2>&1 &
timeout "$limit" python3 benchmarks/published_gpu.py --jobs 5 --fit --precision cpu_bf16 --json "$out/published_fake_cpu_bf16.json" > "$out/fake_cpu_bf16.log" 2>&1 &
models=$(python3 - <<'PY'
from planner.probe.validation.published import family_of, half_of, load_runs
import hashlib
first = ["resnet50_gn", "resnetv2_50x3_bitm", "deit_base_distilled_patch16_384", "crossvit_9_240",
         "vit_small_r26_s32_384", "vit_huge_patch14_224", "tf_efficientnet_l2_ns_475"]
runs = {r.model: r for r in load_runs() if r.bracketed}
families = {}
for name in sorted(runs, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
    families.setdefault(family_of(name), []).append(name)
order = list(first)
for depth in range(3):
    for family in sorted(families, key=lambda f: -len(families[f])):
        if depth < len(families[family]) and families[family][depth] not in order:
            order.append(families[family][depth])
print(" ".join(f"{n}:{runs[n].batch}:{runs[n].image_size}" for n in order))
PY
)
timeout "${GPU_SECONDS:-400}" python3 benchmarks/gpu_published_peaks.py --out "$out" --seconds "${GPU_BUDGET:-360}" --models $models > "$out/gpu_peaks.log" 2>&1
echo "gpu part exit $?"; tail -n 5 "$out/gpu_peaks.log"
wait
tail -n 12 "$out/fake_cuda_fp16.log"; tail -n 6 "$out/fake_cpu_bf16.log"
ls -la "$out"
