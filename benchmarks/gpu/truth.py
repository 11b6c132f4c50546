"""Ground truth from a real GPU for the device-free estimates: memory and step time, measured.

Two parts, each a subcommand writing one JSON file as it goes (so a run stopped at its deadline
keeps what it measured):

``published``: timm's published RTX 3090 training benchmark (``benchmarks/data/``) reproduced on
this card, uncapped, for a sample of its models: the model with its own 1000-class head built on
the GPU, ``torch.optim.SGD(lr=1e-4, momentum=0.9, nesterov=True, foreach=False)`` (torch 1.12's
per-parameter loop), forward and cross-entropy under fp16 ``autocast('cuda')``, backward, step,
``cudnn.benchmark`` on, random inputs, channels-first; attention written out (timm's
``set_fused_attn(False)``, as timm 0.6.6 did). At the published batch and the next larger value of
timm's decay sequence: the allocator's allocated and reserved peaks, this process's non-torch bytes
(NVML), the weights-and-state bytes, the median step time. Attention models are also run at the
published batch with today's default (fused scaled-dot-product attention). On a card larger than
24 GiB both points run, so a bracket is checked as ``peak(B) fits 24 GiB < peak(next)``.

``checkpointing``: the reference architectures at their reference sizes, fp16 autocast with a
GradScaler and Adam, 10 classes, at a few micro-batches with and without timm's gradient
checkpointing: peaks and median step times (what activation checkpointing saves and costs).

Usage (from the repository root; ``--device cpu`` is a dry run of the code path with tiny models):
    python -m benchmarks.gpu.truth published --out DIR [--seconds 150] [--models A B ...]
    python -m benchmarks.gpu.truth checkpointing --out DIR [--seconds 60]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

from benchmarks.paths import PUBLISHED_CSV

DECAY = [512, 384, 256, 192, 128, 96, 64, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1]
# Models the first estimate got wrong (DESIGN.md, issue 10) and the reference set's architectures.
PRIORITY = ["resnet50_gn", "resnetv2_50x3_bitm", "deit_base_distilled_patch16_384", "crossvit_9_240",
            "vit_small_r26_s32_384", "vit_huge_patch14_224", "tf_efficientnet_l2_ns_475",
            "vit_large_patch16_224", "swin_large_patch4_window7_224", "convnext_large"]
REFERENCE_ARCHS = [("convnext_large.fb_in22k", (320, 224)), ("vit_large_patch16_224", (224, 224)),
                   ("swinv2_large_window12_192.ms_in22k", (192, 192)),
                   ("swin_large_patch4_window7_224", (224, 224))]


def gib(point: dict) -> str:
    return "OOM" if point["oom"] else f"{point['reserved_peak_bytes'] / 2**30:.2f}G"


def stable_hash(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def next_batch(batch: int) -> int | None:
    """The next larger value of timm's decay sequence (what ran out of memory), None above 512."""
    larger = [b for b in DECAY if b > batch]
    return larger[-1] if larger else None


class Device:
    """Memory statistics and timing on CUDA, harmless zeros on the CPU (dry runs)."""

    def __init__(self, name: str):
        self.name = name
        self.cuda = name == "cuda"

    def reset(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def allocated(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else 0

    def peaks(self) -> dict:
        if not self.cuda:
            return {"allocated_peak_bytes": 0, "reserved_peak_bytes": 0, "non_torch_bytes": 0}
        from planner.base import cuda_device as gpu

        return {"allocated_peak_bytes": torch.cuda.max_memory_allocated(),
                "reserved_peak_bytes": torch.cuda.max_memory_reserved(),
                "non_torch_bytes": gpu.non_torch_bytes()}


def timed_steps(step, device: Device, warmup: int, timed: int) -> list[float]:
    """Run ``warmup`` then ``timed`` steps; seconds of each timed step."""
    for _ in range(warmup):
        step()
    device.sync()
    seconds = []
    for _ in range(timed):
        started = time.perf_counter()
        step()
        device.sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_point(step, device: Device, batch: int, warmup: int, timed: int) -> dict:
    """Peaks and step time at one batch; an out-of-memory is recorded, not raised."""
    device.reset()
    before = device.allocated()
    oom, seconds = False, []
    try:
        seconds = timed_steps(step, device, warmup, timed)
    except torch.OutOfMemoryError:
        oom = True
    point = {"batch": batch, "oom": oom, "state_bytes_before": before}
    if not oom:
        point.update(device.peaks())
        median = statistics.median(seconds)
        point.update({"step_seconds_median": median, "samples_per_sec": batch / median,
                      "step_seconds": [round(s, 5) for s in seconds]})
    return point


def published_step(model, optimizer, batch: int, img: int, device: Device):
    """One step of the published recipe, as a closure over fresh random inputs of this batch."""
    inputs = torch.randn(batch, 3, img, img, device=device.name)
    targets = torch.randint(0, 1000, (batch,), device=device.name)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast(device.name, dtype=torch.float16 if device.cuda else torch.bfloat16):
            loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def has_attention(model) -> bool:
    return any(hasattr(module, "fused_attn") for module in model.modules())


def build_on(name: str, device: Device, **kwargs):
    """timm model built directly on the device (initialisation there is much faster than on CPU)."""
    import timm

    try:
        with torch.device(device.name):
            return timm.create_model(name, **kwargs)
    except Exception:  # a model whose construction does not work under a device context
        return timm.create_model(name, **kwargs).to(device.name)


def published_model(row, device: Device, warmup: int, timed: int, fused: bool) -> dict:
    """Both points of one published model (and the fused-attention point for attention models)."""
    import timm
    import timm.layers

    name, img, batch = row.model, int(row.train_img_size), int(row.train_batch_size)
    if not device.cuda:  # a dry run of the code path: tiny shapes
        img, batch = 64, 2
    timm.layers.set_fused_attn(False)
    record: dict = {"model": name, "img_size": img, "published_batch": batch,
                    "published_samples_per_sec": float(row.train_samples_per_sec),
                    "published_param_count_m": float(row.param_count), "runs": []}
    device.reset()
    model = build_on(name, device)
    model.train()
    record["param_count_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    record["attention"] = has_attention(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, foreach=False)
    for b in [batch, next_batch(batch)]:
        if b is None:
            continue
        point = measure_point(published_step(model, optimizer, b, img, device), device, b, warmup, timed)
        point["attention_path"] = "explicit" if record["attention"] else None
        record["runs"].append(point)
    del model, optimizer
    if fused and record["attention"]:
        timm.layers.set_fused_attn(True)
        device.reset()
        model = build_on(name, device)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, foreach=False)
        point = measure_point(published_step(model, optimizer, batch, img, device), device, batch, warmup, timed)
        point["attention_path"] = "fused"
        record["runs"].append(point)
        del model, optimizer
        timm.layers.set_fused_attn(False)
    device.reset()
    return record


def published_order(frame: pd.DataFrame, models: list[str] | None) -> list:
    """Rows to measure: the given models, else the priority list then bracketed models by name hash."""
    rows = {row.model: row for row in frame.itertuples()}
    if models:
        return [rows[m] for m in models if m in rows]
    bracketed = sorted((m for m, r in rows.items() if r.train_batch_size < 512 and m not in PRIORITY),
                       key=stable_hash)
    unbracketed = sorted((m for m, r in rows.items() if r.train_batch_size == 512), key=stable_hash)[:5]
    return [rows[m] for m in [*PRIORITY, *bracketed[:20], *unbracketed, *bracketed[20:]] if m in rows]


def run_published(args, device: Device) -> dict:
    frame = pd.read_csv(PUBLISHED_CSV)
    result = {"part": "published", **environment(device), "models": [], "errors": []}
    deadline = time.perf_counter() + args.seconds
    for row in published_order(frame, args.models):
        if time.perf_counter() > deadline:
            result["stopped_at_deadline"] = True
            break
        started = time.perf_counter()
        try:
            record = published_model(row, device, args.warmup, args.timed, fused=not args.no_fused)
        except Exception as error:
            result["errors"].append({"model": row.model, "error": f"{type(error).__name__}: {error}"[:300],
                                     "trace": traceback.format_exc(limit=2)[-600:]})
            device.reset()
            continue
        record["seconds"] = round(time.perf_counter() - started, 2)
        result["models"].append(record)
        write(args.out / "published.json", result)
        runs = " ".join(f"{r['batch']}({r['attention_path'] or 'no attention'}):{gib(r)}" for r in record["runs"])
        print(f"published {row.model} {runs} [{record['seconds']} s]", flush=True)
    write(args.out / "published.json", result)
    return result


def checkpointing_step(model, optimizer, scaler, batch: int, size: tuple[int, int], device: Device):
    inputs = torch.randn(batch, 3, *size, device=device.name)
    targets = torch.randint(0, 10, (batch,), device=device.name)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.name, dtype=torch.float16 if device.cuda else torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def run_checkpointing(args, device: Device) -> dict:
    result = {"part": "checkpointing", **environment(device), "archs": [], "errors": []}
    deadline = time.perf_counter() + args.seconds
    archs = [(a, tuple(s)) for a, s in REFERENCE_ARCHS] if not args.models else [(m, (64, 64)) for m in args.models]
    for arch, size in archs:
        for checkpointing in (False, True):
            if time.perf_counter() > deadline:
                result["stopped_at_deadline"] = True
                write(args.out / "checkpointing.json", result)
                return result
            try:
                device.reset()
                model = build_on(arch, device, num_classes=10, img_size=size) if "vit" in arch or "swin" in arch \
                    else build_on(arch, device, num_classes=10)
                model.train()
                model.set_grad_checkpointing(checkpointing)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                scaler = torch.amp.GradScaler(device.name, enabled=device.cuda)
                for b in args.batches:
                    point = measure_point(checkpointing_step(model, optimizer, scaler, b, size, device), device, b,
                                          args.warmup, args.timed)
                    point.update({"arch": arch, "size": list(size), "grad_checkpointing": checkpointing})
                    result["archs"].append(point)
                    write(args.out / "checkpointing.json", result)
                    shown = gib(point) if point["oom"] else f"{gib(point)} {point['step_seconds_median'] * 1000:.0f} ms"
                    print(f"checkpointing {arch} {size} ckpt={checkpointing} b={b}: {shown}", flush=True)
                del model, optimizer, scaler
            except Exception as error:
                result["errors"].append({"arch": arch, "grad_checkpointing": checkpointing,
                                         "error": f"{type(error).__name__}: {error}"[:300]})
            device.reset()
    write(args.out / "checkpointing.json", result)
    return result


def environment(device: Device) -> dict:
    import timm

    info = {"device": device.name, "torch": torch.__version__, "timm": timm.__version__}
    if device.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update({"gpu": props.name, "gpu_total_bytes": props.total_memory,
                     "cudnn": torch.backends.cudnn.version(), "cuda": torch.version.cuda})
    return info


def write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    temporary.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["published", "checkpointing"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=150.0, help="stop starting new models after this")
    parser.add_argument("--models", nargs="*", help="published: these models; checkpointing: these archs at 64 px")
    parser.add_argument("--batches", type=int, nargs="*", default=[16, 32, 64], help="checkpointing micro-batches")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=5)
    parser.add_argument("--no-fused", action="store_true", help="published: skip the fused-attention point")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu.truth needs a CUDA GPU and none is present here: nothing was measured.")
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    device = Device(args.device)
    if device.cuda:
        torch.backends.cudnn.benchmark = True
        torch.empty(1, device="cuda")
    run = run_published if args.part == "published" else run_checkpointing
    started = time.perf_counter()
    result = run(args, device)
    print(f"{args.part}: {len(result.get('models', result.get('archs', [])))} measured, "
          f"{len(result['errors'])} errors, {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
