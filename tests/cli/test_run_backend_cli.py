"""`planner run --backend`/`planner probe --gpu-mem ...` options through the real command line; all but
the last Ray test run without Ray (a stand-in package that fails to import plays a machine without it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from planner_process import run_planner
from run_data import plan_entry, small_plan, write_plan

TRAIN_OPTIONS = ["--no-pretrained", "--epochs", "1", "--device", "cpu"]


def planner(*args: str | Path, pythonpath: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run_planner(*args, pythonpath=pythonpath, env={"COLUMNS": "200"})


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr.strip()


def test_ray_backend_without_ray_says_how_to_install_it(image_folder: Path, tmp_path: Path) -> None:
    no_ray = tmp_path / "site"
    (no_ray / "ray").mkdir(parents=True)
    (no_ray / "ray" / "__init__.py").write_text('raise ImportError("No module named \'ray\'")\n')
    plan = small_plan(tmp_path / "plan.json")
    result = planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", *TRAIN_OPTIONS,
                     "--backend", "ray", pythonpath=(no_ray,))
    assert "pip install 'fit-planner[ray]'" in one_line_error(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--pack"], "apply to --backend ray"),
        (["--gpus-per-entry", "0.5"], "apply to --backend ray"),
        (["--backend", "ray", "--gpus-per-entry", "1.5"], "whole number"),
        (["--backend", "ray", "--pack", "--gpus-per-entry", "0.5"], "leave --gpus-per-entry at 1"),
    ],
)
def test_ray_options_are_checked_before_anything_runs(options: list[str], expected: str, image_folder: Path,
                                                       tmp_path: Path) -> None:
    plan = small_plan(tmp_path / "plan.json")
    result = planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", *TRAIN_OPTIONS, *options)
    assert expected in one_line_error(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_on_a_machine_without_gpus_trains_on_cpu_workers_with_a_clean_stderr(image_folder: Path,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("ray")
    plan = write_plan(tmp_path / "plan.json", [plan_entry("test_resnet")])
    result = planner("run", plan, "--data", image_folder, "--out", tmp_path / "run", "--no-pretrained", "--epochs",
                     "1", "--backend", "ray")  # --device auto, as the local backend: the CPU here
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing from Ray a user cannot act on (e.g. its token-authentication note)
    (record,) = json.loads((tmp_path / "run" / "run.json").read_text())["entries"].values()
    assert record["status"] == "finished" and record["device"] == "cpu"


def test_probe_with_several_budgets_plans_a_pair_for_each(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = planner("probe", "--gpu-mem", "60MiB", "--gpu-mem", "20MiB", "--arch", "test_resnet", "--size", "64",
                     "--device", "cpu", "--effective-bs", "16", "-o", out)
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    (entry,) = plan["entries"]
    assert plan["budget_bytes"] == 20 * 2**20  # the smallest budget is the plan's
    pairs = entry["per_budget"]
    assert [pair["budget_bytes"] for pair in pairs] == [20 * 2**20, 60 * 2**20]
    assert (pairs[0]["accum"], pairs[0]["micro_batch"]) == (entry["accum"], entry["micro_batch"])
    assert all(pair["accum"] * pair["micro_batch"] == 16 and pair["fits"] for pair in pairs)
    assert pairs[1]["micro_batch"] > pairs[0]["micro_batch"]  # test_resnet at 64 px: 8 fits 20 MiB, 16 does not
    assert "60 MiB: 1 × 16" in result.stdout
