"""The estimate meter's run sequence without a device model against the cpu meter's rehearsal.

Both meters now follow a run's phases (frozen step, validation, unfrozen steps, validation, TTA); on
the CPU (fp32) the estimate without a device (``DeviceModel.raw()``: live tensor bytes) should name
the same phase as the one that sets the peak, and give each phase's peak close to the measured one.

    python -m benchmarks.planning.sequence_vs_cpu [--models resnet18:64:8 convnext_atto:32:8]
"""

from __future__ import annotations

import argparse
import os

from planner.base.entries import EntrySpec
from planner.base.plan import ItemTransform
from planner.probe.meters.cpu import CpuMeter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate import EstimateMeter

MIB = 2**20


def compare(arch: str, size: int, micro_batch: int) -> dict:
    """Each phase's peak (MiB) by both meters, their ratio and the phase that sets the peak."""
    entry = EntrySpec(name=arch, arch=arch, item=ItemTransform(method="squish", resize=size), size=(size, size))
    estimate = EstimateMeter(precision="fp32", device=DeviceModel.raw()).measure(entry, micro_batch)
    cpu_meter = CpuMeter()
    try:
        cpu = cpu_meter.measure(entry, micro_batch)
    finally:
        cpu_meter.close()
    phases = [name for name in estimate.phase_peaks if name in cpu.phase_peaks]
    return {"entry": f"{arch} {size}px micro-batch {micro_batch}",
            "phases": {name: (cpu.phase_peaks[name] / MIB, estimate.phase_peaks[name] / MIB,
                              estimate.phase_peaks[name] / cpu.phase_peaks[name]) for name in phases},
            "peak_phase": (cpu.peak_phase, estimate.peak_phase)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18:64:8", "convnext_atto:64:8", "resnet18:32:16"],
                        help="arch:size:micro-batch")
    args = parser.parse_args()
    os.environ.setdefault("PLANNER_NO_CACHE", "1")
    for spec in args.models:
        arch, size, micro_batch = spec.split(":")
        result = compare(arch, int(size), int(micro_batch))
        print(f"{result['entry']}: peak phase cpu {result['peak_phase'][0]}, estimate {result['peak_phase'][1]}")
        for name, (cpu, estimate, ratio) in result["phases"].items():
            print(f"  {name:17s} cpu {cpu:8.1f} MiB  estimate {estimate:8.1f} MiB  ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
