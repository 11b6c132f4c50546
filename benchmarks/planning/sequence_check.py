"""The estimate meter's run sequence, checked against what was measured.

1. On the CPU (fp32): the estimate without a device (``DeviceModel.raw()``: live tensor bytes)
   against the cpu meter's rehearsal of the same run, phase by phase: the same phase should set
   the peak, and each phase's peak should be close to the measured one.
2. The recorded H100 run (``benchmarks/results/gpu_h100/gpu_run_check.json``): the planning device
   model's per-phase estimate of the run's sequence and its one-step estimate, against the run's
   measured phase peaks.

    python -m benchmarks.planning.sequence_check [--models resnet18:64:8 ...] [--h100]
"""

from __future__ import annotations

import argparse
import json
import os

from benchmarks.paths import RESULTS
from planner.base.compat import native_meta_kernels
from planner.base.entries import EntrySpec, reference_entries
from planner.base.plan import ItemTransform
from planner.probe.meters.cpu import CpuMeter
from planner.probe.meters.device_model import DeviceModel
from planner.probe.meters.estimate import EstimateMeter, fastai_recipe
from planner.probe.meters.fake_step import FakeStep

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


def h100_check() -> None:
    """The recorded H100 run's phase peaks against the sequence estimate and the one-step estimate."""
    run = json.loads((RESULTS / "gpu_h100" / "gpu_run_check.json").read_text())
    entry = next(entry for entry in reference_entries() if entry.name == run["entry"])
    micro_batch = run["trained"]["micro_batch"]
    meter = EstimateMeter()
    sequence = meter.measure(entry, micro_batch)
    device = meter.device
    with native_meta_kernels():
        one_step = device.peaks(FakeStep(fastai_recipe(entry, meter.n_classes, "fp16")).run(micro_batch, entry.size))
    measured = run["phase_peaks"]
    print(f"{run['entry']} micro-batch {micro_batch}, device model {device}")
    print(f"  measured: frozen {measured['frozen_train'] / 2**30:.2f} GiB, unfrozen "
          f"{measured['unfrozen_train'] / 2**30:.2f} GiB (run peak {run['measured_peak_bytes'] / 2**30:.2f} GiB)")
    for name, replayed in sequence.phase_peaks.items():
        print(f"  sequence {name:17s} {device.card_bytes(replayed) / 2**30:.2f} GiB")
    print(f"  sequence peak {sequence.peak_bytes / 2**30:.2f} GiB ({sequence.peak_phase}), "
          f"{sequence.peak_bytes / run['measured_peak_bytes'] - 1:+.1%} vs the run")
    print(f"  one step peak {one_step.card_bytes / 2**30:.2f} GiB, "
          f"{one_step.card_bytes / run['measured_peak_bytes'] - 1:+.1%} vs the run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18:64:8", "convnext_atto:64:8", "resnet18:32:16"],
                        help="arch:size:micro-batch")
    parser.add_argument("--h100", action="store_true", help="check the recorded H100 run instead")
    args = parser.parse_args()
    os.environ.setdefault("PLANNER_NO_CACHE", "1")
    if args.h100:
        h100_check()
        return
    for spec in args.models:
        arch, size, micro_batch = spec.split(":")
        result = compare(arch, int(size), int(micro_batch))
        print(f"{result['entry']}: peak phase cpu {result['peak_phase'][0]}, estimate {result['peak_phase'][1]}")
        for name, (cpu, estimate, ratio) in result["phases"].items():
            print(f"  {name:17s} cpu {cpu:8.1f} MiB  estimate {estimate:8.1f} MiB  ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
