"""The op counter: FLOPs per group, bytes per kernel, nothing for views, phases; on real CPU tensors."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from planner.probe.meters.opcount import OpCounter, conv_flops


def test_depthwise_convolution_counts_per_group_forward_and_both_gradients():
    channels, size, kernel = 32, 16, 7
    conv = torch.nn.Conv2d(channels, channels, kernel, padding=3, groups=channels, bias=False)
    x = torch.randn(2, channels, size, size, requires_grad=True)
    counter = OpCounter()
    with counter:
        conv(x).sum().backward()
    one_pass = 2 * 2 * channels * kernel * kernel * size * size  # 2·N·C_out·(C_in/groups)·k²·positions
    totals = counter.totals()
    assert totals.tensor_flops == 0  # one channel per group: no tensor cores
    assert totals.vector_flops >= 3 * one_pass  # forward, input gradient, weight gradient
    assert totals.vector_flops < 3 * one_pass + 10 * x.numel()  # plus elementwise work (sum, its gradient)
    torch_flops = FlopCounterMode(display=False)
    with torch_flops:
        conv(x).sum().backward()
    assert torch_flops.get_total_flops() > 10 * 3 * one_pass  # torch counts the weight gradient as dense


def test_dense_convolution_and_linear_run_on_tensor_cores_with_exact_flops():
    conv = torch.nn.Conv2d(16, 32, 3, padding=1, bias=False)
    linear = torch.nn.Linear(64, 10)
    counter = OpCounter()
    with counter, torch.no_grad():
        conv(torch.randn(4, 16, 8, 8))
        linear(torch.randn(5, 64))
    assert counter.totals().tensor_flops == conv_flops((4, 16, 8, 8), (32, 16, 3, 3), (4, 32, 8, 8), False) \
        + 2 * 5 * 64 * 10
    assert conv_flops((4, 16, 8, 8), (32, 16, 3, 3), (4, 32, 8, 8), False) == 2 * 4 * 32 * 16 * 9 * 64


def test_bytes_are_inputs_plus_outputs_and_views_launch_nothing():
    a, b = torch.randn(1000), torch.randn(1000)
    counter = OpCounter()
    with counter:
        total = a + b
        total.view(10, 100).t().reshape(100, 10)  # views only
    assert counter.kernels == 1
    assert counter.totals().bytes == 3 * 1000 * 4


def test_phases_split_the_kernels():
    counter = OpCounter()
    x = torch.randn(8, 8)
    with counter:
        counter.set_phase("forward_backward")
        x.exp()
        x.sin()
        counter.set_phase("eval")
        x.cos()
    assert sum(counter.phase_costs["forward_backward"].values()) == 2
    assert sum(counter.phase_costs["eval"].values()) == 1 == counter.kernels - 2
