"""CUDA's autocast policy on fake CPU tensors: checked against torch's own registrations and header,
and by the dtypes and saved bytes it produces."""

import re
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from planner.base.tracker import StorageTracker
from planner.probe.meters.cuda_autocast import autocast_ops, cuda_autocast, cuda_policy, installed_policy

HEADER = Path(torch.__file__).parent / "include" / "ATen" / "autocast_mode.h"
MACROS = {"AT_FORALL_LOWER_PRECISION_FP": "lower_precision_fp", "AT_FORALL_FP32": "fp32",
          "AT_FORALL_FP32_SET_OPT_DTYPE": "fp32_set_opt_dtype", "AT_FORALL_PROMOTE": "promote"}


def header_policy() -> dict[str, str]:
    """op -> policy from the installed torch's autocast_mode.h (its ``#define AT_FORALL_*(_)`` lists)."""
    text = HEADER.read_text()
    table = {}
    for macro, policy in MACROS.items():
        lines = iter(text[text.index(f"#define {macro}(_)"):].splitlines())
        next(lines)  # the #define line; the macro's body runs to its first line without a continuation
        body = []
        for line in lines:
            body.append(line)
            if not line.rstrip().endswith("\\"):
                break
        for name, overload in re.findall(r"_\((\w+)(?:,\s*(\w+))?\)", "\n".join(body)):
            table[f"{name}.{overload}" if overload else name] = policy
    return table


def test_the_policy_covers_exactly_the_ops_torch_registers_for_cuda_autocast():
    # the installed torch's own registrations decide: its op list differs between releases (torch 2.6
    # lists named-dimension overloads that 2.14 dropped, 2.14 lists rms_norm), and CI runs both ends
    registered = autocast_ops("AutocastCUDA")
    assert len(registered) > 100
    assert set(installed_policy()) == registered


@pytest.mark.skipif(not HEADER.exists(), reason="this torch ships no ATen headers")
def test_each_policy_is_the_one_torchs_header_lists():
    ours = cuda_policy()
    listed = header_policy()
    assert len(listed) > 100
    assert {op: ours[op] for op in listed} == listed


def test_dtypes_follow_cuda_not_cpu():
    with FakeTensorMode():
        x = torch.randn(4, 8)
        weight = torch.randn(8, 8, requires_grad=True)
        with cuda_autocast():
            y = torch.nn.functional.linear(x, weight)
            cuda = {"linear": y.dtype, "softmax": y.softmax(-1).dtype,
                    "layer_norm": torch.nn.functional.layer_norm(y, (8,)).dtype,
                    "group_norm": torch.nn.functional.group_norm(y.view(4, 8, 1), 2).dtype,
                    "sum": y.sum().dtype, "mean": y.mean().dtype, "exp": y.exp().dtype,
                    "addcmul": torch.addcmul(y, x, y).dtype}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.linear(x, weight)
            cpu = {"softmax": y.softmax(-1).dtype, "layer_norm": torch.nn.functional.layer_norm(y, (8,)).dtype}
    assert cuda == {"linear": torch.float16, "softmax": torch.float32, "layer_norm": torch.float32,
                    "group_norm": torch.float32, "sum": torch.float32, "mean": torch.float16,
                    "exp": torch.float32, "addcmul": torch.float32}
    # CPU autocast keeps them in low precision: the difference this module exists for
    assert cpu == {"softmax": torch.bfloat16, "layer_norm": torch.bfloat16}


def test_torchs_cpu_kernels_are_back_after_the_block():
    with FakeTensorMode():
        with cuda_autocast():
            pass
        x, weight = torch.randn(4, 8), torch.randn(8, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.linear(x, weight)
            assert y.dtype == torch.bfloat16
            assert torch.nn.functional.layer_norm(y, (8,)).dtype == torch.bfloat16


def saved_after_forward(region, batch=2, heads=2, length=256, dim=8) -> int:
    """Bytes an explicit attention's forward leaves alive (saved for backward plus its output)."""
    with FakeTensorMode():
        q, k, v = (torch.empty(batch, heads, length, dim, requires_grad=True) for _ in range(3))
        tracker = StorageTracker()
        tracker.track([q, k, v])
        inputs = tracker.live_bytes
        with tracker, region():
            out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        assert out is not None
        return tracker.live_bytes - inputs


def test_explicit_attention_saves_fp32_probabilities_and_their_fp16_copy():
    b, h, n, d = 2, 2, 256, 8
    square, row = b * h * n * n, b * h * n * d
    # CUDA: softmax runs in fp32 and saves its fp32 output (4 bytes), the next matmul saves its fp16
    # copy (2 bytes); q, k, v are cast to fp16 once each (cached leaves) and saved; the output is fp16.
    assert saved_after_forward(cuda_autocast) == 6 * square + 3 * 2 * row + 2 * row
    # CPU bf16: softmax saves its bf16 output, which the matmul uses as it is.
    cpu_bf16 = saved_after_forward(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert cpu_bf16 == 2 * square + 3 * 2 * row + 2 * row


def test_a_weight_used_twice_is_cast_once_per_region():
    with FakeTensorMode():
        layer = torch.nn.Linear(1024, 1024, bias=False)
        x = torch.empty(1, 1024)
        tracker = StorageTracker()
        tracker.track([*layer.parameters(), x])
        with tracker, cuda_autocast():
            once = layer(x)
            after_once = tracker.live_bytes
            twice = layer(x)
            after_twice = tracker.live_bytes
        assert once is not None and twice is not None
        # the first call keeps an fp16 copy of the weight (cached) and of the input (saved for the
        # weight's gradient) and its fp16 output; the second adds an input copy and an output only
        assert after_once == 1024 * 1024 * 4 + 1024 * 4 + 1024 * 1024 * 2 + 2 * 1024 * 2
        assert after_twice - after_once == 2 * 1024 * 2
