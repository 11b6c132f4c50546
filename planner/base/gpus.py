"""GPUs users rent or get for free: the memory a plan may use and the speeds the step-time model needs.

Every card is a frozen :class:`GpuSpec`, looked up by name (``get_gpu("T4")``, case and punctuation
ignored, aliases such as ``A100-80G`` or the name CUDA reports, ``Tesla T4``). Figures:

- ``memory_mib``: the total the driver reports (``nvidia-smi``'s "Memory-Usage" total);
- ``budget_bytes``: what a plan may fill, the total CUDA reports to a process
  (``torch.cuda.get_device_properties().total_memory``; on cards with GDDR and ECC, such as the T4,
  the ECC bits take 6.25 % first): on Kaggle's P100 16,280 MiB, on a T4 about 14.75 GiB;
- ``tensor_flops``: dense fp16 tensor-core FLOP/s with fp32 accumulation (what autocast's matmuls
  and convolutions run at; GeForce cards run it at half their fp16-accumulate rate), no sparsity;
  the P100 has no tensor cores and gets its fp16 CUDA-core rate;
- ``vector_flops``: fp32 FLOP/s of the CUDA cores (elementwise work, depthwise convolutions);
- ``bandwidth``: memory bandwidth in bytes/s.

Speeds are the vendor's datasheet figures (boost clock); sources are listed per card. Memory totals
marked "typical" are the values nvidia-smi and torch commonly show for that card; a driver can differ
by a few MiB.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from planner.base.errors import UserError

MIB = 2**20
GIB = 2**30
TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class GpuSpec:
    """One card: memory (driver total and the plan's budget), peak speeds and where they come from."""

    name: str
    aliases: tuple[str, ...]
    memory_mib: int
    budget_bytes: int
    tensor_flops: float
    vector_flops: float
    bandwidth: float
    sources: tuple[str, ...]
    note: str = ""


_DATASHEETS = {
    "T4": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf",
    "P100": "https://images.nvidia.com/content/tesla/pdf/nvidia-tesla-p100-PCIe-datasheet.pdf",
    "V100": "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf",
    "A10": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf",
    "L4": "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet",
    "GA102": "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf",
    "ADA": "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
    "A100": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    "H100": "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
}

GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("T4", ("Tesla T4", "T4-16G"), 15_360, 15_843_721_216, 65 * TERA, 8.1 * TERA, 320 * GIGA,
            (_DATASHEETS["T4"], "https://sysrqmts.com/en/gpus/nvidia/tesla/t4",
             "https://chiemon.github.io/2024/12/25/%E6%98%BE%E5%8D%A1%E4%BF%A1%E6%81%AF.html",
             "https://forums.developer.nvidia.com/t/nvidia-t4-has-only-15g-of-memory/173099"),
            "16 GB GDDR6 with ECC: CUDA reports 15,843,721,216 bytes (deviceQuery); Kaggle offers T4 x2"),
    GpuSpec("P100", ("Tesla P100-PCIE-16GB", "P100-16G", "Kaggle P100"), 16_280, 16_280 * MIB,
            18.7 * TERA, 9.3 * TERA, 732 * GIGA,
            (_DATASHEETS["P100"], "https://tech4gamers.com/nvidia-tesla-p100-will-be-available-in-two-variants-of-16gb-12gb-hbm2/"),
            "PCIe 16 GB (Kaggle's); no tensor cores: tensor_flops is the fp16 CUDA-core rate"),
    GpuSpec("V100-16G", ("V100", "Tesla V100-SXM2-16GB", "V100-SXM2-16GB", "Tesla V100-PCIE-16GB"), 16_160,
            16_160 * MIB, 125 * TERA, 15.7 * TERA, 900 * GIGA,
            (_DATASHEETS["V100"], "https://developer.nvidia.com/programming-tensor-cores-cuda-9-0"),
            "SXM2 figures (PCIe: 112 TFLOPS); memory typical"),
    GpuSpec("V100-32G", ("Tesla V100-SXM2-32GB", "V100-SXM2-32GB", "V100-32GB", "Tesla V100-PCIE-32GB"), 32_510,
            32_510 * MIB, 125 * TERA, 15.7 * TERA, 900 * GIGA,
            (_DATASHEETS["V100"], "https://developer.nvidia.com/programming-tensor-cores-cuda-9-0"),
            "SXM2 figures; memory typical"),
    GpuSpec("A10G", ("NVIDIA A10G", "A10G-24G"), 23_028, 22_587 * MIB, 70 * TERA, 31.2 * TERA, 600 * GIGA,
            ("https://aws.amazon.com/ec2/instance-types/g5/",
             "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/", _DATASHEETS["A10"],
             "https://github.com/modal-labs/modal-client/pull/2797", "https://github.com/huggingface/local-gemma/pull/25"),
            "AWS G5's card; NVIDIA publishes no A10G datasheet: tensor rate as reported for AWS's A10G "
            "(the A10's is 125), bandwidth as the A10's; GDDR6 with ECC: nvidia-smi shows 23,028 MiB, torch "
            "reports 22,587 MiB (22.06 GiB)"),
    GpuSpec("A10", ("NVIDIA A10", "A10-24G"), 23_028, 22_587 * MIB, 125 * TERA, 31.2 * TERA, 600 * GIGA,
            (_DATASHEETS["A10"], "https://github.com/modal-labs/modal-client/pull/2797"),
            "datasheet's 250 TFLOPS fp16 is with sparsity; GDDR6 with ECC: nvidia-smi shows 23,028 MiB; budget as "
            "the A10G's, the same board memory (torch reports 22,587 MiB there)"),
    GpuSpec("L4", ("NVIDIA L4", "L4-24G"), 23_034, 22_562 * MIB, 121 * TERA, 30.3 * TERA, 300 * GIGA,
            (_DATASHEETS["L4"], "https://grokipedia.com/page/NVIDIA_L4_vs_L40S",
             "https://hmc-tech.com/gpu/nvidia-l4-vs-nvidia-l40", "https://github.com/modal-labs/modal-client/pull/2797"),
            "datasheet's 242 TFLOPS fp16 is with sparsity; GDDR6 with ECC: nvidia-smi shows 23,034 MiB, torch "
            "reports 22.03 GiB (Colab's and Modal's L4s)"),
    GpuSpec("L40S", ("NVIDIA L40S", "L40S-48G"), 46_068, 45_589 * MIB, 362.05 * TERA, 91.6 * TERA, 864 * GIGA,
            ("https://www.mullet.se/product.html?product_id=355414", "https://hmc-tech.com/gpu/nvidia-l40s-vs-nvidia-t40",
             "https://github.com/modal-labs/modal-client/pull/2797"),
            "NVIDIA's table: fp16 tensor 362.05 TFLOPS (733 with sparsity), fp32 91.6; GDDR6 with ECC: nvidia-smi "
            "shows 46,068 MiB, torch reports 45,589 MiB"),
    GpuSpec("RTX 3090", ("NVIDIA GeForce RTX 3090", "3090", "RTX3090"), 24_576, 25_447_170_048,
            71 * TERA, 35.6 * TERA, 936 * GIGA,
            (_DATASHEETS["GA102"], "https://docslib.org/doc/759549/nvidia-ampere-ga102-gpu-architecture-whitepaper"),
            "the published timm benchmark's card; fp16 tensor with fp32 accumulate 71 TFLOPS (142 with fp16 "
            "accumulate); budget typical (torch reports 23.7 GiB)"),
    GpuSpec("RTX 4090", ("NVIDIA GeForce RTX 4090", "4090", "RTX4090"), 24_564, 25_393_692_672,
            165.2 * TERA, 82.6 * TERA, 1008 * GIGA,
            (_DATASHEETS["ADA"], "https://www.mobylak.com/nvidia-reveals-ada-lovelace-gpu-secrets-extreme-"
             "transistor-counts-at-high-clocks/"),
            "fp16 tensor with fp32 accumulate 165.2 TFLOPS (330.3 with fp16 accumulate); budget typical"),
    GpuSpec("A100-40G", ("A100", "NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB", "A100-40GB", "NVIDIA A100-PCIE-40GB"),
            40_960, 40_326 * MIB, 312 * TERA, 19.5 * TERA, 1555 * GIGA,
            (_DATASHEETS["A100"], "https://glennklockwood.com/garden/processors/A100"),
            "SXM4 speeds (the PCIe card's are the same); budget: the smaller of the two as torch reports it, "
            "the PCIe card's 40,326 MiB (SXM4: 39.6 GiB)"),
    GpuSpec("A100-80G", ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB", "A100-80GB", "NVIDIA A100 80GB PCIe"), 81_920,
            85_031_714_816, 312 * TERA, 19.5 * TERA, 2039 * GIGA,
            (_DATASHEETS["A100"], "https://glennklockwood.com/garden/processors/A100"),
            "SXM4 (PCIe: 1,935 GB/s); budget typical (torch reports 79.2 GiB)"),
    GpuSpec("H100", ("NVIDIA H100 80GB HBM3", "H100-SXM", "H100-80G", "H100-80GB"), 81_559, 85_017_493_504,
            989.4 * TERA, 66.9 * TERA, 3350 * GIGA,
            (_DATASHEETS["H100"], "https://glennklockwood.com/garden/processors/h100",
             "https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html"),
            "SXM5; datasheet's 1,979 TFLOPS fp16 is with sparsity; budget as torch reported it in this "
            "project's H100 session (benchmarks/results/gpu_h100)"),
    GpuSpec("H100-PCIE", ("NVIDIA H100 PCIe", "H100 PCIe"), 81_559, 85_017_493_504,
            756 * TERA, 51 * TERA, 2000 * GIGA,
            (_DATASHEETS["H100"], "https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html"),
            "PCIe; datasheet's 1,513 TFLOPS fp16 is with sparsity; budget typical"),
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(alias): gpu for gpu in GPUS for alias in (gpu.name, *gpu.aliases)}


def gpu_names() -> list[str]:
    return [gpu.name for gpu in GPUS]


def find_gpu(name: str) -> GpuSpec | None:
    """The card called ``name`` (its name, an alias or the name CUDA reports), or None."""
    key = _key(name)
    if key in _BY_KEY:
        return _BY_KEY[key]
    stripped = key.removeprefix("nvidia").removeprefix("tesla").removeprefix("geforce")
    return _BY_KEY.get(stripped)


def get_gpu(name: str) -> GpuSpec:
    """The card called ``name``.

    Raises:
        UserError: no card of that name; the message suggests the closest names (or, for a MIG slice,
            its memory) and lists the known ones.
    """
    gpu = find_gpu(name)
    if gpu is None:
        raise UserError(f"unknown GPU {name!r}: {_suggestion(name)}known cards are {', '.join(gpu_names())}; "
                        "for another card give its memory with --gpu-mem, e.g. --gpu-mem 24G (no time prediction)")
    return gpu


_MIG_PROFILE = re.compile(r"\b\d+g\.(\d+)gb\b", re.IGNORECASE)


def _suggestion(name: str) -> str:
    """The start of an unknown card's message: a MIG slice's memory, or the known names closest to ``name``."""
    mig = _MIG_PROFILE.search(name)
    if mig:
        return (f"a MIG slice has its own share of the card's memory and speed: give the memory nvidia-smi shows "
                f"for it with --gpu-mem (the profile's {mig.group(1)}gb is rounded up); ")
    close = difflib.get_close_matches(_key(name), _BY_KEY, n=3, cutoff=0.8)
    names = list(dict.fromkeys(_BY_KEY[key].name for key in close))
    return f"did you mean {' or '.join(names)}? " if names else ""
