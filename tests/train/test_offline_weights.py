"""Pretrained weights where the hub cannot be reached: read from the local cache at once, without
huggingface_hub's retries. The hub is an address nothing answers at (HF_ENDPOINT), so that these tests
mean the same on a machine with a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import plan_entry, write_plan

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: the connection is refused at once
RUN = ("--epochs", "1", "--device", "cpu")  # with pretrained weights, the default


def _run(plan: Path, data: Path, out: Path, hf_home: Path):
    return run_planner("run", plan, "--data", data, "--out", out, *RUN,
                       env={"HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(hf_home)})


def _cache_weights(hf_home: Path, repo: str, arch: str) -> None:
    """Put ``arch``'s weights into huggingface_hub's cache as a download would (random weights: what is
    checked is where they come from)."""
    import safetensors.torch
    import timm

    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    state = {name: tensor.contiguous() for name, tensor in timm.create_model(arch).state_dict().items()}
    safetensors.torch.save_file(state, snapshot / "model.safetensors")


@pytest.mark.slow
def test_weights_in_the_cache_train_without_the_hub(image_folder: Path, tmp_path: Path) -> None:
    from timm.models import get_pretrained_cfg

    arch = "test_resnet"
    _cache_weights(tmp_path / "hf", get_pretrained_cfg(arch).hf_hub_id, arch)
    plan = write_plan(tmp_path / "plan.json", [plan_entry(arch)])
    done = _run(plan, image_folder, tmp_path / "run", tmp_path / "hf")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the Hugging Face hub ({UNREACHABLE}) cannot be reached" in done.stdout
    assert "Retrying" not in done.stdout + done.stderr


def test_weights_missing_from_the_cache_fail_at_once_with_the_fix(image_folder: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.json", [plan_entry("test_resnet"), plan_entry("resnet10t")])
    done = _run(plan, image_folder, tmp_path / "run", tmp_path / "hf")
    assert done.returncode == 1
    assert "cannot be reached" in done.stdout and "read from the local cache only" in done.stdout
    assert done.stdout.count("pretrained weights could not be downloaded") == 2  # each entry, with the fix
    assert "Retrying" not in done.stdout + done.stderr + (tmp_path / "run" / "run.log").read_text()
