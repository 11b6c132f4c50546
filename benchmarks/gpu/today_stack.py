"""On a CUDA machine: timm's published RTX 3090 recipe on today's stack, for the estimate's device model.

For each chosen model (``--count``, at least 60 by default 64: the published brackets the 2022 device
model gets unsafely wrong, first the held-out ones; the convnet families; the six models of the
first H100 session; then a sample of the rest stratified by family), one worker process:

- the CUDA allocator configuration the product uses (``planner.base.allocator.choose_allocator``,
  set before CUDA starts; ``--allocator`` to override), recorded;
- the allocator capped to the 24 GiB card the brackets were measured on: 23.70 GiB (torch's RTX 3090
  total) minus this process's non-torch bytes (``torch.cuda.set_per_process_memory_fraction``), so that
  several workers share a large card and a bracket is checked as it was in 2022 (the published batch
  fits, the next one runs out of memory);
- the published recipe (``benchmarks/gpu/truth.py``: own 1000-class head, SGD Nesterov, fp16 autocast,
  explicit attention as timm 0.6.6) at the published batch and the next one; steps until the reserved
  peak has not grown for two steps (at most ``--max-steps``); for models without attention, with
  ``cudnn.benchmark`` on (the published runs') and off (cuDNN's workspaces, measured);
- per point: allocated and reserved peaks, reserved after each step, this process's non-torch bytes
  (NVML), out-of-memory or not, median step time.

Workers run ``--parallel`` at a time (each on its share of the cores); the parent stops what still
runs after ``--seconds`` and writes ``OUT/gpu_today_stack.json`` (environment + one record per model),
also after each finished worker. ``--device cpu`` is a dry run of the code path at batches 2 and 3 (no
cap, no peaks). After the session, ``python -m benchmarks.gpu.today_stack_fit --today FILE`` turns the
points into pairs.

    python -m benchmarks.gpu.today_stack --out DIR [--count 64] [--parallel 5] [--seconds 240]
    python -m benchmarks.gpu.today_stack --out DIR --device cpu --models resnet18 vit_tiny_patch16_224
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.paths import REPO, RESULTS

CONVNET_FAMILIES = ("resnet", "resnext", "resnetv2", "seresnet", "ecaresnet", "resnetrs", "regnetx", "regnety",
                    "cs3darknet", "cs3sedarknet", "densenet", "dla", "dpn", "vgg", "convnext", "efficientnet",
                    "skresnet", "res2net", "tresnet", "hrnet", "vovnet", "nfnet", "dm_nfnet", "repvgg")
FIRST_SESSION = ("resnet50_gn", "resnetv2_50x3_bitm", "deit_base_distilled_patch16_384", "crossvit_9_240",
                 "vit_small_r26_s32_384", "vit_huge_patch14_224")


def stable_hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def choose_models(count: int) -> list[dict]:
    """The models to measure, in order of value; each with its published batch, image size and why."""
    from benchmarks.published.runs import family_of, half_of
    from planner.probe.meters.brackets import load_brackets
    from planner.probe.meters.stacks import PUBLISHED_2022

    records = {r["model"]: r for r in json.loads((RESULTS / "published_gpu.json").read_text()) if "points" in r}
    brackets, card = load_brackets()
    device = PUBLISHED_2022.device
    unsafe = [b.model for b in brackets if device.card_bytes(b.at_next["active"]) <= card]
    chosen: dict[str, str] = {}
    for model in sorted(unsafe, key=lambda m: (half_of(m) != "held_out", m)):
        chosen[model] = f"unsafe in 2022's model ({half_of(model).replace('_', '-')})"
    for model in FIRST_SESSION:
        chosen.setdefault(model, "measured in the first H100 session")
    by_family: dict[str, list[str]] = {}
    for model in sorted(records, key=stable_hash):
        by_family.setdefault(family_of(model), []).append(model)
    convnets = [m for family in CONVNET_FAMILIES for m in by_family.get(family, [])[:1]]
    for model in convnets:
        if len(chosen) >= count:
            break
        chosen.setdefault(model, "convnet family")
    rest = sorted(by_family.items(), key=lambda item: stable_hash(item[0]))
    rank = 0
    while len(chosen) < count and any(len(models) > rank for _, models in rest):
        for _, models in rest:
            if len(models) > rank and len(chosen) < count:
                chosen.setdefault(models[rank], "stratified sample (one per family, by name hash)")
        rank += 1
    return [{"model": m, "why": why, "family": family_of(m), "half": half_of(m),
             "published_batch": records[m]["published_batch"], "next_batch": records[m]["next_batch"],
             "image_size": records[m]["image_size"]} for m, why in chosen.items() if m in records]


def grown_steps(step, device, max_steps: int) -> list[int]:
    """Run ``step`` until the reserved peak has not grown for two steps (at least 3, at most ``max_steps``);
    the reserved peak after each step."""
    import torch

    reserved: list[int] = []
    for _ in range(max_steps):
        step()
        device.sync()
        reserved.append(torch.cuda.max_memory_reserved() if device.cuda else 0)
        if len(reserved) >= 3 and reserved[-1] == reserved[-2] == reserved[-3]:
            break
    return reserved


def measure(model, optimizer, batch: int, img: int, device, max_steps: int) -> dict:
    """One point: steps until reserved stops growing; peaks, non-torch bytes, step time; OOM recorded."""
    import torch

    from benchmarks.gpu.truth import published_step

    device.reset()
    point: dict = {"batch": batch, "oom": False}
    started = time.perf_counter()
    try:
        reserved = grown_steps(published_step(model, optimizer, batch, img, device), device, max_steps)
        point["reserved_after_step"] = reserved
        point["steps"] = len(reserved)
    except torch.OutOfMemoryError:
        point["oom"] = True
    optimizer.zero_grad(set_to_none=True)
    point.update(device.peaks())
    point["seconds"] = round(time.perf_counter() - started, 3)
    return point


def worker(spec: dict, args) -> dict:
    """One model's points in this process (its own CUDA context, allocator setting and cap)."""
    import timm.layers
    import torch

    from benchmarks.gpu.truth import Device, build_on, has_attention
    from planner.base.allocator import allocator_in_force, use_allocator
    from planner.base.gpus import get_gpu
    from planner.base.plan import AllocatorConfig

    choice = AllocatorConfig(conf=args.allocator, source="user") if args.allocator is not None else None
    device = Device(args.device)
    record = {**spec, "allocator": None, "points": []}
    if device.cuda:
        use_allocator(choice)
        torch.zeros(1, device="cuda")
        from planner.base.cuda_device import non_torch_bytes

        context = non_torch_bytes()
        card = get_gpu("RTX 3090").budget_bytes
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((card - context) / total, 0)
        record.update({"allocator": allocator_in_force().conf, "context_bytes": context, "cap_bytes": card - context})
    img, batches = spec["image_size"], [spec["published_batch"], spec["next_batch"]]
    if not device.cuda:  # a dry run: tiny batches
        batches = [2, 3]
    timm.layers.set_fused_attn(False)
    model = build_on(spec["model"], device)
    model.train()
    record["attention"] = has_attention(model)
    record["param_count_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, foreach=False)
    modes = [True] if record["attention"] else [True, False]
    for batch in batches:  # both modes at the published batch before any out-of-memory at the next
        for benchmark in modes:
            torch.backends.cudnn.benchmark = benchmark
            point = measure(model, optimizer, batch, img, device, args.max_steps)
            point["cudnn_benchmark"] = benchmark
            record["points"].append(point)
            print(json.dumps(point)[:400], flush=True)
    return record


def environment(device_name: str) -> dict:
    import timm
    import torch

    from planner.base.allocator import choose_allocator

    info = {"torch": torch.__version__, "timm": timm.__version__, "device": device_name,
            "product_allocator": choose_allocator().conf}
    if device_name == "cuda":
        info.update({"gpu": torch.cuda.get_device_name(0), "gpu_total_bytes": torch.cuda.get_device_properties(0)
                     .total_memory, "cudnn": torch.backends.cudnn.version(), "cuda": torch.version.cuda})
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = str(pynvml.nvmlSystemGetDriverVersion())
            pynvml.nvmlShutdown()
        except Exception:  # NVML missing: the driver stays unknown
            info["driver"] = None
    return info


def run_all(specs: list[dict], args) -> dict:
    """Workers ``args.parallel`` at a time, each on its share of the cores, until ``args.seconds``."""
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // args.parallel)
    (args.out / "workers").mkdir(parents=True, exist_ok=True)
    result = {"part": "today_stack", **environment(args.device), "models": [], "not_measured": []}
    pending, running = list(specs), []
    deadline = time.monotonic() + args.seconds
    slot = 0
    while (pending or running) and time.monotonic() < deadline:
        while pending and len(running) < args.parallel:
            spec = pending.pop(0)
            mine = [cores[(slot * share + i) % len(cores)] for i in range(share)]
            slot += 1
            out = args.out / "workers" / f"{spec['model']}.json"
            command = ["taskset", "-c", ",".join(map(str, mine)), sys.executable, "-m", "benchmarks.gpu.today_stack",
                       "--worker",
                       json.dumps(spec), "--worker-out", str(out), "--device", args.device,
                       "--max-steps", str(args.max_steps)]
            if args.allocator is not None:
                command += ["--allocator", args.allocator]
            log = (args.out / "workers" / f"{spec['model']}.log").open("w")
            running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), spec, out))
        time.sleep(0.5)
        for item in list(running):
            process, spec, out = item
            if process.poll() is not None:
                running.remove(item)
                if out.exists():
                    result["models"].append(json.loads(out.read_text()))
                else:
                    result["not_measured"].append({"model": spec["model"], "exit": process.returncode})
                write(args.out / "gpu_today_stack.json", result)
    for process, spec, _ in running:
        process.kill()
        result["not_measured"].append({"model": spec["model"], "stopped": f"still running after {args.seconds:.0f} s"})
    result["not_measured"] += [{"model": spec["model"], "stopped": "not started before the deadline"}
                               for spec in pending]
    write(args.out / "gpu_today_stack.json", result)
    return result


def write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)


def summary(result: dict) -> None:
    for record in result["models"]:
        cells = [record["error"]] if "error" in record else []
        for point in record.get("points", []):
            gib = "OOM" if point["oom"] else f"{point['reserved_peak_bytes'] / 2**30:.2f}G/{point.get('steps')}st"
            cells.append(f"{point['batch']}{'' if point['cudnn_benchmark'] else ' nobench'}:{gib}")
        print(f"{record['model']:34s} {record['why'][:30]:30s} {' '.join(cells)}")
    steps = [p["seconds"] for r in result["models"] for p in r["points"]]
    print(f"{len(result['models'])} models measured, {len(result['not_measured'])} not; "
          f"median point {statistics.median(steps) if steps else 0:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--models", nargs="*", help="these models instead of the chosen ones")
    parser.add_argument("--parallel", type=int, default=5, help="workers at once (each capped to 24 GiB)")
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--allocator", help="PYTORCH_CUDA_ALLOC_CONF for the workers (default: the product's)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--list", action="store_true", help="print the chosen models and stop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        try:
            record = worker(json.loads(args.worker), args)
        except Exception as error:
            record = {**json.loads(args.worker), "error": f"{type(error).__name__}: {error}"[:300],
                      "trace": traceback.format_exc(limit=3)[-800:]}
        write(args.worker_out, record)
        return 0
    specs = choose_models(args.count)
    if args.models:
        known = {spec["model"]: spec for spec in choose_models(10_000)}
        specs = [known.get(m, {"model": m, "why": "given", "family": None, "half": None, "published_batch": 2,
                               "next_batch": 3, "image_size": 224}) for m in args.models]
    if args.list:
        for spec in specs:
            print(f"{spec['model']:40s} {spec['published_batch']:4d}/{spec['next_batch']:<4d} {spec['image_size']:4d} "
                  f"{spec['family']:14s} {spec['why']}")
        print(f"{len(specs)} models")
        return 0
    if args.out is None:
        parser.error("--out is required")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_today_stack: needs a CUDA device and none is available here; nothing measured")
        return 0
    result = run_all(specs, args)
    summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
