"""Real CUDA peaks of timm's published 2022 recipe, to check the fake-step estimate model by model.

Runs on a GPU machine (torch + timm only; this project is not imported). For each model, in the
order given: build it on the GPU with explicit attention, run the published recipe (fp16
``autocast('cuda')`` around forward, loss *and backward*; ``SGD(lr=1e-4, momentum=0.9,
nesterov=True, foreach=False)``; ``zero_grad(set_to_none=False)`` as torch 1.12 did;
``cudnn.benchmark`` on) for 2 steps, then reset the peak statistics and run 2 more: the
steady-state allocated and reserved peaks. Attention models are run again with fused attention
(timm's ``fused_attn`` switched on in the same modules). Writes one JSON object per model to
``OUT/gpu_published_peaks.json`` as it goes and stops before ``--seconds``.

    python benchmarks/gpu_published_peaks.py --out DIR --seconds 300 --models A:B:IMG ...
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import torch


def non_torch_bytes() -> int | None:
    """This process's device memory outside torch's allocator (CUDA context and the like), by NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == os.getpid() and process.usedGpuMemory:
                return int(process.usedGpuMemory) - torch.cuda.memory_reserved()
    except Exception:
        return None
    return None


def steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
          targets: torch.Tensor, count: int) -> None:
    for _ in range(count):
        optimizer.zero_grad(set_to_none=False)
        with torch.autocast("cuda", dtype=torch.float16):
            output = model(inputs)
            if isinstance(output, tuple):
                output = output[0]
            torch.nn.functional.cross_entropy(output, targets).backward()
        optimizer.step()
    torch.cuda.synchronize()


def measure(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int, image: int) -> dict:
    inputs = torch.randn(batch, 3, image, image, device="cuda")
    targets = torch.randint(0, 1000, (batch,), device="cuda")
    point: dict = {"batch": batch}
    try:
        steps(model, optimizer, inputs, targets, 2)
        torch.cuda.reset_peak_memory_stats()
        point["allocated_before_bytes"] = torch.cuda.memory_allocated()
        started = time.perf_counter()
        steps(model, optimizer, inputs, targets, 2)
        point["step_seconds"] = round((time.perf_counter() - started) / 2, 4)
        point.update(allocated_peak_bytes=torch.cuda.max_memory_allocated(),
                     reserved_peak_bytes=torch.cuda.max_memory_reserved(), non_torch_bytes=non_torch_bytes(),
                     oom=False)
    except torch.OutOfMemoryError:
        point["oom"] = True
    return point


def run_model(name: str, batch: int, image: int) -> dict:
    import timm
    from timm.layers import set_fused_attn

    set_fused_attn(False)
    with torch.device("cuda"):
        model = timm.create_model(name, pretrained=False, num_classes=1000)
    model.train()
    record: dict = {"model": name, "image_size": image,
                    "param_count": sum(p.numel() for p in model.parameters()), "runs": []}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, foreach=False)
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for fused in ([False, True] if attention else [False]):
        for module in attention:
            module.fused_attn = fused
        gc.collect()
        torch.cuda.empty_cache()
        point = measure(model, optimizer, batch, image)
        point["attention"] = None if not attention else ("fused" if fused else "explicit")
        record["runs"].append(point)
    del model, optimizer
    gc.collect()
    torch.cuda.empty_cache()
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--models", nargs="+", required=True, help="NAME:BATCH:IMAGE")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    torch.empty(1, device="cuda")
    import timm

    header = {"torch": torch.__version__, "timm": timm.__version__, "gpu": torch.cuda.get_device_name(0),
              "cudnn": torch.backends.cudnn.version(), "context_bytes": non_torch_bytes()}
    records: list[dict] = []
    out = args.out / "gpu_published_peaks.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.models:
        if time.perf_counter() - started > args.seconds:
            break
        name, batch, image = spec.split(":")
        model_started = time.perf_counter()
        try:
            record = run_model(name, int(batch), int(image))
        except Exception as error:
            record = {"model": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            gc.collect()
            torch.cuda.empty_cache()
        record["seconds"] = round(time.perf_counter() - model_started, 2)
        records.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "runs"}),
              [(r.get("attention"), round(r.get("allocated_peak_bytes", 0) / 2**30, 2))
               for r in record.get("runs", [])],
              flush=True)
        out.write_text(json.dumps({**header, "models": records}, indent=1))


if __name__ == "__main__":
    main()
