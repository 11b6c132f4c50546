"""The host's share of a step: counted in the real fake step of tiny models, measured on this CPU, and
weighed against the card's work in the plan."""

import pytest

from planner.base.entries import EntrySpec
from planner.base.gpus import get_gpu
from planner.base.plan import Host, ItemTransform, load_plan
from planner.probe.hostbench import measure_host, this_host
from planner.probe.hosttime import DEFAULT_HOST_CONSTANTS, host_step_times
from planner.probe.meters.estimate import EstimateMeter

ITEM = ItemTransform(resize=64, method="squish")


def test_host_time_grows_with_the_ops_and_parameter_tensors_the_fake_step_counts(one_torch_thread):
    meter = EstimateMeter(gpu=get_gpu("H100"))
    try:
        works = {arch: meter.measure(EntrySpec(name=arch, arch=arch, item=ITEM, size=(64, 64)), 4).host_work
                 for arch in ("resnet18", "resnet34")}
    finally:
        meter.close()
    small, large = works["resnet18"], works["resnet34"]
    assert small.forward_backward_ops > small.eval_ops > 0 and small.parameter_tensors > 0
    assert large.forward_backward_ops > small.forward_backward_ops and large.parameter_tensors > small.parameter_tensors
    host = Host(cpu="test", op_seconds=3e-6, param_seconds=2e-5)
    slow, fast = (host_step_times(work, host, "H100") for work in (large, small))
    assert slow.forward_backward > fast.forward_backward and slow.optimizer_step > fast.optimizer_step
    assert fast.forward_backward == pytest.approx(DEFAULT_HOST_CONSTANTS.op_factor * 3e-6 * small.forward_backward_ops)
    twice = host_step_times(small, host.model_copy(update={"speed": 2.0}), "H100")
    assert twice.forward_backward == pytest.approx(fast.forward_backward / 2)


def test_the_benchmark_measures_this_cpu_once_and_the_speed_is_the_callers(one_torch_thread):
    measured = measure_host()
    assert 0 < measured.op_seconds < measured.param_seconds < 1e-2  # a parameter's dozen ops cost more than one
    first, again = this_host(), this_host(0.5)
    assert again.speed == 0.5 and first.speed == 1
    assert (again.op_seconds, again.param_seconds) == (first.op_seconds, first.param_seconds)  # the stored answer


@pytest.mark.parametrize(("speed", "bound"), [(1.0, "host"), (1e6, "device")])
def test_the_plan_records_what_bounds_each_entry_and_the_host_speed_moves_it(tmp_path, one_torch_thread,
                                                                            speed, bound):
    from planner.probe.command import make_plan
    from planner.probe.options import ProbeOptions

    out = tmp_path / "plan.json"
    make_plan(ProbeOptions(gpus=("H100",), arch="resnet18", size=(64, 64), device="estimate", effective_batch_size=16,
                           epochs=1, host_speed=speed, output=out, jobs=1))
    plan = load_plan(out)
    (entry,) = plan.entries
    time = entry.predicted_time
    assert plan.timing.host.speed == speed and time.time_bound == bound
    assert time.total_seconds >= max(time.bound_seconds.values())  # each pass at its slowest bound
    if bound == "device":  # a host a million times as fast leaves only the card's work
        assert time.total_seconds == pytest.approx(time.bound_seconds["device"], abs=0.1)
