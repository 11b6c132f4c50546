"""What a CUDA device holds for this process, as the card sees it (torch's allocator + the rest).

``torch.cuda.memory_*`` sees only the caching allocator. The CUDA context, cuBLAS/cuDNN handles and
lazily loaded kernels are invisible to it but visible to NVML, which reports the memory each process
uses on the card. A budget of "16G" is a whole card, so a peak to compare with it is
reserved peak + this process's non-torch bytes.
"""

from __future__ import annotations

import os

import torch

from planner.base.compat import clear_cublas_workspaces

FALLBACK_CONTEXT_BYTES = 640 * 2**20
"""A CUDA context's size when NVML cannot tell (300-650 MB seen on current cards; the high end)."""


def nvml_process_bytes(device_index: int) -> int | None:
    """Bytes NVML says this process uses on the device, or None when NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == os.getpid() and process.usedGpuMemory:
                    return int(process.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML missing, no permission, or containers that hide PIDs
        return None
    return None


def non_torch_bytes(device_index: int = 0) -> int:
    """This process's device memory outside torch's caching allocator (context, handles, kernels).

    NVML's per-process figure when available; otherwise used-by-everyone minus torch's reserved,
    which over-counts when other processes share the card (a safe error for a budget).
    """
    reserved = torch.cuda.memory_reserved(device_index)
    process = nvml_process_bytes(device_index)
    if process is None:
        free, total = torch.cuda.mem_get_info(device_index)
        process = total - free
    return max(0, process - reserved)


def gpu_name(device_index: int = 0) -> str:
    return torch.cuda.get_device_name(device_index)


def gpu_total_bytes(device_index: int = 0) -> int:
    return torch.cuda.get_device_properties(device_index).total_memory


def cap_to_budget(budget_bytes: int, device_index: int = 0) -> None:
    """Make the allocator fail where a card of ``budget_bytes`` would: budget minus non-torch bytes.

    ``set_per_process_memory_fraction`` limits reserved memory only, so the context is subtracted
    first. Emulation is imperfect (cuDNN may choose other algorithms with more free memory).
    """
    usable = budget_bytes - non_torch_bytes(device_index)
    fraction = min(1.0, max(0.0, usable / gpu_total_bytes(device_index)))
    torch.cuda.set_per_process_memory_fraction(fraction, device_index)


def uncap(device_index: int = 0) -> None:
    torch.cuda.set_per_process_memory_fraction(1.0, device_index)


def release_cached(device_index: int = 0) -> None:
    """Collect unreachable objects, free cuBLAS's workspaces, return cached blocks to the driver and
    start new peak statistics: what the next try or probe starts from is only what is still alive."""
    import gc

    gc.collect()
    clear_cublas_workspaces()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device_index)


def peak_bytes(device_index: int = 0) -> int:
    """Reserved peak since the last reset plus non-torch bytes: what decides OOM on a whole card."""
    return torch.cuda.max_memory_reserved(device_index) + non_torch_bytes(device_index)
