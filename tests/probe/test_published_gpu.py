"""benchmarks/published/estimate.py: one fake step of the published recipe gives both memory and time (issue 11)."""


import pytest

from benchmarks.published.estimate import DEVICES, evaluate, measure
from benchmarks.published.recipe import benchmark_step
from benchmarks.published.runs import load_runs
from benchmarks.published.steptime import predicted_samples_per_sec
from planner.probe.meters.device_model import CALIBRATED_OVERHEAD_BYTES

pytest.importorskip("timm")


def test_one_pass_gives_memory_and_time_and_counting_leaves_the_memory_alone():
    run = next(r for r in load_runs() if r.model == "vgg11_bn")
    constants = {device: {"overhead": CALIBRATED_OVERHEAD_BYTES, "factor": 1.0} for device in DEVICES}
    record = evaluate(run, "cuda_fp16", False, constants, extra=False)

    assert record["published_samples_per_sec"] == run.samples_per_sec > 0  # the CSV's, at the recorded batch
    assert record["predicted_samples_per_sec"] == round(predicted_samples_per_sec(record["op_costs"], run.batch), 2)
    assert record["predicted_samples_per_sec"] > 0
    tensor_flops = sum(row[0] * row[3] for row in record["op_costs"])
    # VGG's convolutions and linears are dense: the op counter's tensor FLOPs are torch's own count,
    # less the first convolution (3 input channels: a vector op, below 1 % of the step)
    assert 0.99 * record["torch_flops"] < tensor_flops < record["torch_flops"]

    plain = benchmark_step(run.model)  # the same steps with no counter riding along
    assert record["points"] == [measure(run, batch, plain) for batch in (run.batch, run.next_batch)]
