"""Training time on published GPU runs: the step-time model calibrated and judged on timm's benchmark.

timm's published RTX 3090 training benchmark (``benchmarks/data``) gives, for 838 models, training
samples per second at the recorded batch (fp16 autocast, SGD nesterov, random inputs, no data
loading). This script:

1. ``--collect``: runs the published recipe as one fake training step per model (model built on
   ``meta`` then fake, its own 1000-class head, explicit attention as in timm 0.6.6, CPU autocast
   fp16 for CUDA's, cross-entropy, backward, SGD nesterov step) under :class:`OpCounter` and torch's
   ``FlopCounterMode`` in the same pass, and caches every model's op costs (resumable, gzip JSON
   lines under ``benchmarks/.cache``; about an hour on 2 shared cores for all models). Models whose
   parameter count today differs from the file's by more than 1 % are kept out, and listed.
2. fits the few constants of :class:`planner.probe.steptime.TimeConstants` on the calibration half
   (``benchmarks/published/split.py``: sha256 of the name) by least |log(predicted / published)|,
   and the naive baseline's one efficiency (torch's FLOP count at the card's tensor peak) the same way;
3. reports on the held-out half the median and 90th percentile of |predicted / published − 1|,
   overall and by family, for both, and writes ``benchmarks/results/published_time.json`` with
   every model's ``published_samples_per_sec`` and ``predicted_samples_per_sec``.

``evaluate_published`` is the importable core (used by the tests and by ``estimate.py``, which now
gives the op costs from the estimate's own step: this script's ``--collect`` pass is the first fit's record).
Run: ``python -m benchmarks.published.steptime --collect`` then ``python -m benchmarks.published.steptime``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import hashlib
import json
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.paths import PUBLISHED_CSV, REPO, RESULTS
from benchmarks.published.recipe import timm_attention
from benchmarks.published.split import half, is_calibration
from planner.base.gpus import get_gpu
from planner.probe.steptime import (
    DEFAULT_CONSTANTS,
    StepCosts,
    TimeConstants,
    fit_constants,
    fit_flop_efficiency,
    naive_step_seconds,
    step_seconds,
)

CACHE = REPO / "benchmarks" / ".cache" / "published_opcosts.jsonl.gz"
OUT = RESULTS / "published_time.json"
PARAM_TOLERANCE = 0.01
PUBLISHED_GPU = "RTX 3090"



@dataclass(frozen=True)
class PublishedRow:
    """One row of the published benchmark."""

    model: str
    samples_per_sec: float
    batch: int
    img_size: int
    param_count_m: float


def read_published(path: Path = PUBLISHED_CSV) -> list[PublishedRow]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [PublishedRow(row["model"], float(row["train_samples_per_sec"]), int(row["train_batch_size"]),
                             int(row["train_img_size"]), float(row["param_count"]))
                for row in csv.DictReader(handle)]


def family(name: str) -> str:
    """The architecture family: the name's leading letters after weight-source prefixes (tf_, gluon_...)."""
    for prefix in ("tf_", "gluon_", "ig_", "ssl_", "swsl_", "legacy_", "timm_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    match = re.match(r"[a-z]+", name)
    return match.group(0) if match else name


_CLASSES = (
    ("transformer", ("vit", "deit", "beit", "cait", "xcit", "swin", "crossvit", "convit", "levit", "pit", "tnt",
                     "twins", "coat", "mvit", "volo", "jx", "gcvit", "maxvit", "coatnet", "sequencer", "poolformer",
                     "edgenext", "mobilevit", "nest", "visformer")),
    ("mlp", ("mixer", "resmlp", "gmlp", "gmixer")),
    ("depthwise / mobile", ("efficientnet", "mobilenet", "mnasnet", "mixnet", "ghostnet", "fbnet", "lcnet",
                            "tinynet", "semnasnet", "spnasnet", "rexnet", "hardcorenas", "convnext", "mobileone",
                            "efficientformer", "dm", "ese", "convmixer", "regnety", "regnetz", "nf_regnet",
                            "regnetv")),
)


def architecture_class(name: str) -> str:
    """A coarse class for reports: transformer, mlp, depthwise / mobile, or convnet (dense convolutions)."""
    for label, starts in _CLASSES:
        if any(name.startswith(start) or family(name).startswith(start) for start in starts):
            return label
    return "convnet"


def count_published_step(row: PublishedRow) -> dict:
    """One fake training step of the published recipe for ``row``: op costs, torch's FLOPs, params."""
    import timm
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    started = time.perf_counter()
    with torch.device("meta"), timm_attention(fused=False):  # timm 0.6.6 (the published runs) wrote attention out
        model = timm.create_model(row.model, pretrained=False, num_classes=1000)
    params = sum(parameter.numel() for parameter in model.parameters())
    record: dict = {"model": row.model, "params": params}
    if abs(params / 1e6 / row.param_count_m - 1) > PARAM_TOLERANCE:
        record["skip"] = f"today's timm builds {params / 1e6:.2f} M parameters, the file says {row.param_count_m} M"
        return record
    counter, flops = step_counters()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
        images = torch.empty(row.batch, 3, row.img_size, row.img_size)
        targets = torch.zeros(row.batch, dtype=torch.long)
        with flops, counter:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
    record.update(counted(counter, flops))
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def step_counters() -> tuple:
    """An ``OpCounter`` and torch's ``FlopCounterMode`` (not displaying) for one pass over a step:
    the step-time model's op costs and the naive baseline's FLOPs. Enter both while the step runs."""
    from torch.utils.flop_counter import FlopCounterMode

    return _op_counter_class()(), FlopCounterMode(display=False)


def counted(counter, flops) -> dict:
    """What :func:`step_counters` saw, as a cache record's ``costs`` and ``torch_flops``."""
    return {"costs": StepCosts.from_counter(counter).to_list(), "torch_flops": flops.get_total_flops()}


def predicted_samples_per_sec(costs: Sequence[Sequence[float]], batch: int, gpu_name: str = PUBLISHED_GPU,
                              constants: TimeConstants = DEFAULT_CONSTANTS) -> float:
    """Samples per second of a step of ``batch`` samples whose kernels are ``costs`` (as :func:`counted`)."""
    return batch / step_seconds(StepCosts.from_list(costs), get_gpu(gpu_name), constants)


def _op_counter_class() -> type:
    """``OpCounter``; loaded from its file when the package's other dependencies (pydantic, fastai)
    are missing, as on the GPU machine, which has torch and timm only."""
    try:
        from planner.probe.meters.opcount import OpCounter
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "opcount", REPO / "planner" / "probe" / "meters" / "opcount.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        OpCounter = module.OpCounter
    return OpCounter


def read_cache(folder: Path = CACHE.parent) -> dict[str, dict]:
    """Every cached record of every worker's file in ``folder`` (``published_opcosts*.jsonl.gz``)."""
    records: dict[str, dict] = {}
    for path in sorted(folder.glob("published_opcosts*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            try:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by an interrupted worker
                        continue
                    records[record["model"]] = record
            except (EOFError, gzip.BadGzipFile):  # a worker killed while writing: keep what came before
                pass
    return records


def collect(rows: Iterable[PublishedRow], path: Path = CACHE, limit: int | None = None,
            reverse: bool = False) -> None:
    """Count every row not yet cached, in hash order (so any prefix samples both halves alike).

    A second worker can run at the same time with ``reverse`` and its own ``path``.
    """
    done = read_cache(path.parent)
    todo = [row for row in rows if row.model not in done]
    todo.sort(key=lambda row: hashlib.sha256(row.model.encode()).hexdigest(), reverse=reverse)
    path.parent.mkdir(parents=True, exist_ok=True)
    for number, row in enumerate(todo[:limit] if limit else todo):
        if reverse and row.model in read_cache(path.parent):  # the other worker got here first
            break
        try:
            record = count_published_step(row)
        except Exception as error:  # a model today's timm cannot build or fake: recorded, left out
            record = {"model": row.model, "skip": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        with gzip.open(path, "at", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{number + 1}/{len(todo)} {row.model} {record.get('seconds', record.get('skip'))}", flush=True)
        gc.collect()


def _collect_share(rows: list[PublishedRow], folder: Path, jobs: int, job: int) -> None:
    import torch

    torch.set_num_threads(1)
    collect(rows[job::jobs], folder / f"published_opcosts_j{job}.jsonl.gz")


def collect_parallel(rows: Sequence[PublishedRow], folder: Path, jobs: int, limit: int | None = None) -> None:
    """:func:`collect` in ``jobs`` processes, each with its own share of the rows and its own file."""
    import multiprocessing

    done = read_cache(folder)
    todo = sorted((row for row in rows if row.model not in done),
                  key=lambda row: hashlib.sha256(row.model.encode()).hexdigest())[:limit]
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_collect_share, args=(todo, folder, jobs, job)) for job in range(jobs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def error_summary(errors: Sequence[float]) -> dict:
    """n, median and 90th percentile of |predicted / published − 1|."""
    return {"n": len(errors), "median": round(statistics.median(errors), 4), "p90": round(quantile(errors, 0.9), 4)}


def evaluate_published(rows: Sequence[PublishedRow], cache: dict[str, dict], gpu_name: str = PUBLISHED_GPU,
                       constants: TimeConstants | None = None, min_family: int = 6) -> dict:
    """Fit on the calibration half, judge on the held-out half; per-model predictions included.

    Args:
        rows: the published rows (truth).
        cache: op costs per model from :func:`collect`.
        gpu_name: the card of the GPU table the truth was measured on.
        constants: use these instead of fitting (to judge the product's defaults).
        min_family: families with fewer held-out models are reported together as "other".

    Returns:
        A JSON-ready dict: the fitted constants, held-out and calibration error summaries for the
        model and the naive baseline (overall and by family), skipped models with reasons, and per
        model ``published_samples_per_sec`` and ``predicted_samples_per_sec``.
    """
    gpu = get_gpu(gpu_name)
    usable = [row for row in rows if "costs" in cache.get(row.model, {})]
    costs = {row.model: StepCosts.from_list(cache[row.model]["costs"]) for row in usable}
    calibration = [row for row in usable if is_calibration(row.model)]
    truth = [row.batch / row.samples_per_sec for row in calibration]
    fitted = constants or fit_constants([costs[row.model] for row in calibration], truth, gpu)
    efficiency = fit_flop_efficiency([cache[row.model]["torch_flops"] for row in calibration], truth, gpu)
    models, errors, naive_errors = [], {}, {}
    for row in usable:
        predicted = row.batch / step_seconds(costs[row.model], gpu, fitted)
        naive = row.batch / naive_step_seconds(cache[row.model]["torch_flops"], gpu, efficiency)
        part = half(row.model)
        models.append({"model": row.model, "half": part, "family": family(row.model),
                       "class": architecture_class(row.model), "batch": row.batch,
                       "img_size": row.img_size, "published_samples_per_sec": row.samples_per_sec,
                       "predicted_samples_per_sec": round(predicted, 2),
                       "naive_samples_per_sec": round(naive, 2)})
        errors.setdefault(part, []).append((family(row.model), abs(predicted / row.samples_per_sec - 1)))
        naive_errors.setdefault(part, []).append((family(row.model), abs(naive / row.samples_per_sec - 1)))
    return {
        "gpu": gpu.name, "constants": fitted.to_dict(), "naive_flop_efficiency": round(efficiency, 4),
        "split": "sha256(name)[0] even -> calibration (benchmarks/published/split.py)",
        "held_out": _by_family(errors.get("held-out", []), naive_errors.get("held-out", []), min_family),
        "held_out_by_class": _by_family(*(_classes(errors.get("held-out", []), models, "held-out"),
                                          _classes(naive_errors.get("held-out", []), models, "held-out")), 1),
        "calibration": _by_family(errors.get("calibration", []), naive_errors.get("calibration", []), min_family),
        "skipped": {name: record["skip"] for name, record in cache.items() if "skip" in record},
        "not_collected": [row.model for row in rows if row.model not in cache],
        "models": models,
    }


def _classes(errors: list[tuple[str, float]], models: list[dict], part: str) -> list[tuple[str, float]]:
    """The same errors keyed by architecture class instead of family (rows are in the same order)."""
    classes = [model["class"] for model in models if model["half"] == part]
    return [(label, error) for label, (_, error) in zip(classes, errors, strict=True)]


def _by_family(errors: list[tuple[str, float]], naive: list[tuple[str, float]], min_family: int) -> dict:
    if not errors:
        return {}
    counts: dict[str, int] = {}
    for name, _ in errors:
        counts[name] = counts.get(name, 0) + 1

    def group(name: str) -> str:
        return name if counts[name] >= min_family else "other"

    table = {"all": {"model": error_summary([e for _, e in errors]), "naive": error_summary([e for _, e in naive])}}
    for name in sorted({group(name) for name, _ in errors}, key=lambda n: (n == "other", n)):
        table[name] = {"model": error_summary([e for f, e in errors if group(f) == name]),
                       "naive": error_summary([e for f, e in naive if group(f) == name])}
    return table


def markdown_table(table: dict) -> str:
    """The error table (model and naive baseline, median and p90 of |predicted / published − 1|) in Markdown."""
    lines = ["| family | n | model median | model p90 | naive median | naive p90 |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in table.items():
        model, naive = row["model"], row["naive"]
        lines.append(f"| {name} | {model['n']} | {model['median']:.0%} | {model['p90']:.0%} | "
                     f"{naive['median']:.0%} | {naive['p90']:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collect", action="store_true", help="run the fake steps not yet cached first")
    parser.add_argument("--limit", type=int, help="collect at most this many models")
    parser.add_argument("--worker", type=int, default=0, help="a second worker (1) counts in reverse order")
    parser.add_argument("--jobs", type=int, default=1, help="collect in this many processes")
    parser.add_argument("--cache-dir", type=Path, default=CACHE.parent)
    parser.add_argument("--collect-only", action="store_true", help="collect, then stop (no fit, no scipy)")
    parser.add_argument("--defaults", action="store_true", help="judge planner's default constants, no fit")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = read_published()
    if args.collect and args.jobs > 1:
        collect_parallel(rows, args.cache_dir, args.jobs, args.limit)
    elif args.collect:
        name = "published_opcosts.jsonl.gz" if args.worker == 0 else f"published_opcosts_{args.worker}.jsonl.gz"
        collect(rows, args.cache_dir / name, limit=args.limit, reverse=args.worker == 1)
    if args.collect_only:
        return
    result = evaluate_published(rows, read_cache(args.cache_dir),
                                constants=DEFAULT_CONSTANTS if args.defaults else None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({key: result[key] for key in ("gpu", "constants", "naive_flop_efficiency")}, indent=1))
    print("held-out half:\n" + markdown_table(result["held_out"]))
    print("held-out half by class:\n" + markdown_table(result["held_out_by_class"]))
    print("calibration half:\n" + markdown_table(result["calibration"]))
    print(f"skipped {len(result['skipped'])}, not collected {len(result['not_collected'])}; written {args.output}")


if __name__ == "__main__":
    main()
