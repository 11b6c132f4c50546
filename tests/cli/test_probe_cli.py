"""`planner probe` through the real command line."""

import json
from pathlib import Path

import pytest


def test_probe_writes_a_plan_with_the_cpu_meter(planner_cli, tmp_path):
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu-mem", "300MiB", "--arch", "resnet18", "--size", "64",
                         "--device", "cpu", "--effective-bs", "16", "-o", out)
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    (entry,) = plan["entries"]
    assert plan["budget_bytes"] == 300 * 2**20 and plan["measured_on"]["device"] == "cpu"
    assert entry["accum"] * entry["micro_batch"] == 16 and entry["fits"]
    assert "resnet18-crop64-64" in result.stdout and "plan written" in result.stdout
    assert "\r" not in result.stdout  # readable in a CI log
    assert result.stderr == ""  # no library warning a user cannot act on


def test_probe_for_a_named_card_uses_its_memory_and_predicts_epoch_and_run_times(planner_cli, tmp_path):
    from planner.base.gpus import get_gpu

    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu", "T4", "--arch", "resnet18", "--size", "64", "--device", "estimate",
                         "--effective-bs", "16", "--epochs", "3", "--plot", "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    plan = json.loads(out.read_text())
    (entry,) = plan["entries"]
    assert plan["budget_bytes"] == get_gpu("T4").budget_bytes
    assert plan["timing"]["gpu"] == "T4" and plan["timing"]["epochs"] == 3 and plan["timing"]["n_train"] == 8326
    chosen = next(p for p in entry["probes"] if p["micro_batch"] == entry["micro_batch"])
    assert chosen["predicted_times"]["gpu"] == "T4" and chosen["predicted_times"]["forward_backward"] > 0
    assert chosen["host_work"]["forward_backward_ops"] > chosen["host_work"]["eval_ops"] > 0
    assert plan["timing"]["host"]["speed"] == 1 and plan["timing"]["host"]["op_seconds"] > 0
    time = entry["predicted_time"]
    assert time["source"] == "estimate" and time["epoch_seconds"] > time["valid_seconds_per_epoch"] > 0
    assert time["total_seconds"] == pytest.approx(
        time["frozen_epoch_seconds"] + 3 * time["epoch_seconds"] + time["tta_seconds"], abs=0.2)
    assert "predicted total" in result.stdout and "on T4" in result.stdout and "host: " in result.stdout
    assert time["time_bound"] in ("device", "host") and set(time["bound_seconds"]) == {"device", "host"}
    assert result.stderr == ""  # e.g. torch 2.6's note that the CUDA autocast emulation overrides kernels


def test_entry_that_does_not_fit_stays_in_the_plan_and_exits_3(planner_cli, tmp_path):
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu-mem", "40MiB", "--arch", "resnet18", "--size", "64",
                         "--device", "cpu", "--effective-bs", "8", "-o", out)
    assert result.returncode == 3
    (entry,) = json.loads(out.read_text())["entries"]
    assert not entry["fits"] and entry["micro_batch"] == 2 and entry["predicted_peak_bytes"] > 40 * 2**20
    assert "do" in result.stderr and "not fit" in result.stderr
    # what it needs and the fix, in one line: the smallest card it fits with the plan's margin
    (line,) = result.stderr.strip().splitlines()
    needed = entry["predicted_peak_bytes"] / (1 - json.loads(out.read_text())["margin"])
    assert f"a card of at least {needed / 2**20:,.0f} MiB" in line and "--gpu-mem 0." in line


def test_the_predicted_total_counts_only_the_entries_that_fit(planner_cli, tmp_path):
    from planner.probe.report import format_duration

    models = tmp_path / "models.toml"
    models.write_text('[[model]]\narch = "resnet18"\nitem = { resize = 40, method = "squish" }\nsizes = [32]\n\n'
                      '[[model]]\narch = "resnet50"\nitem = { resize = 256, method = "squish" }\nsizes = [224]\n')
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu", "T4", "--gpu-mem", "300MiB", "--models", models, "--device", "estimate",
                         "--jobs", "1", "-o", out)
    assert result.returncode == 3, result.stderr
    fits, misfit = json.loads(out.read_text())["entries"]
    assert fits["fits"] and not misfit["fits"] and misfit["predicted_time"]["total_seconds"] > 0
    total = format_duration(fits["predicted_time"]["total_seconds"])  # `planner run` skips the misfit
    assert f"predicted total {total} on T4 of the 1 of 2 entries that fit" in result.stdout


def test_a_margin_is_given_as_a_fraction_or_as_the_percentage_plans_print(planner_cli, tmp_path):
    for margin, fraction, shown in (("10%", 0.1, "margin 10%: given by --margin"),
                                    ("2.5 %", 0.025, "margin 2.5%: given by --margin")):
        out = tmp_path / f"plan{fraction}.json"
        result = planner_cli("probe", "--gpu", "T4", "--margin", margin, "--arch", "resnet18", "--size", "64",
                             "--device", "estimate", "--jobs", "1", "-o", out)
        assert result.returncode == 0, result.stderr
        assert json.loads(out.read_text())["margin"] == pytest.approx(fraction) and shown in result.stdout


def test_a_misfit_at_a_prime_effective_batch_names_the_batches_that_allow_smaller_steps(planner_cli, tmp_path):
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu-mem", "100MiB", "--arch", "resnet18", "--size", "64", "--device", "estimate",
                         "--jobs", "1", "--effective-bs", "7", "--no-checkpointing", "-o", out)
    assert result.returncode == 3, result.stderr
    (entry,) = json.loads(out.read_text())["entries"]
    assert entry["micro_batch"] == 7 and not entry["fits"]  # 7's only divisor above 1
    (line,) = result.stderr.strip().splitlines()
    assert "7's smallest is 7), e.g. --effective-bs 8" in line and "leave out --no-checkpointing" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu-mem", "0"], "larger than zero"),
        (["--gpu-mem", "lots"], "cannot read the memory size"),
        (["--gpu-mem", "16G", "--arch", "convnext_larg", "--size", "224"], "did you mean convnext_large"),
        (["--gpu-mem", "16G", "--arch", "resnet18", "--size", "0"], "must be positive"),
        (["--gpu-mem", "16G", "--arch", "resnet18.in22k", "--size", "64"], "resnet18 has no pretrained tag 'in22k'"),
        (["--gpu-mem", "16G", "--arch", "vit_tiny_patch16_224", "--size", "64"],
         "timm builds vit_tiny_patch16_224 for 224x224 images (a fixed input size): use size 224"),
        (["--gpu-mem", "16G", "--arch", "resnet18"], "go together"),
        (["--gpu-mem", "16G", "--models", "missing.toml"], "not found"),
        (["--gpu-mem", "16G", "--models", "{bad}"], "cannot be parsed"),
        (["--gpu-mem", "16G", "--arch", "resnet18", "--size", "64", "--data", "{empty}"], "holds no images"),
        (["--gpu-mem", "16G", "--arch", "resnet18", "--size", "64", "--data", "{nowhere}"], "no train_images"),
        (["--gpu", "T5", "--arch", "resnet18", "--size", "64"], "unknown GPU 'T5'"),
        (["--gpu", "T4", "--gpu-mem", "16G", "--arch", "resnet18", "--size", "64"],
         "--gpu-mem 16.00 GiB is more than a T4 gives a process (14.76 GiB): leave --gpu-mem out"),
        (["--gpu", "T4", "--gpu-mem", "14.76G", "--arch", "resnet18", "--size", "64"],  # as a T4's plan shows it
         "--gpu-mem 15,848,429,322 bytes is more than a T4 gives a process (15,843,721,216 bytes)"),
        (["--arch", "resnet18", "--size", "64"], "no GPU here to plan for"),
        (["--gpu", "T4", "--arch", "resnet18", "--size", "64", "--host-speed", "0"], "--host-speed 0 is not a speed"),
        (["--gpu", "T4", "--arch", "resnet18", "--size", "64", "--host-speed", "-2"], "a positive number"),
        (["--gpu-mem", "16G", "--margin", "0.9"], "--margin 0.9 must be between 0 and 0.5"),
        (["--gpu-mem", "16G", "--margin", "60%"], "--margin 0.6 must be between 0 and 0.5, e.g. 0.1 or 10%"),
        (["--gpu-mem", "16G", "--margin", "ten"], "--margin 'ten' is not a fraction: write it as 0.1 or 10%"),
        (["--gpu-mem", "16G", "--jobs", "0"], "--jobs 0 must be at least 1"),
        (["--gpu-mem", "16G", "--epochs", "0"], "--epochs 0 must be at least 1"),
        (["--gpu-mem", "16G", "--effective-bs", "0"], "--effective-bs 0 is too small"),
        (["--gpu-mem", "16G", "--arch", "resnet18", "--size", "64", "--loader-workers", "-1"],
         "--loader-workers -1 must be 0 or more"),
    ],
)
def test_user_mistakes_give_one_line_exit_2_and_no_plan(planner_cli, tmp_path, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]\n")
    (tmp_path / "empty" / "train_images" / "cat").mkdir(parents=True)
    (tmp_path / "nowhere").mkdir()
    args = [a.format(bad=bad, empty=tmp_path / "empty", nowhere=tmp_path / "nowhere") for a in args]
    out = tmp_path / "plan.json"
    result = planner_cli("probe", *args, "--device", "cpu", "-o", out)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_probe_with_a_data_folder_uses_its_images(planner_cli, tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        folder = tmp_path / "data" / "train_images" / label
        folder.mkdir(parents=True)
        for i in range(6):  # 10 to train on after the held-out split: enough for an effective batch of 8
            Image.new("RGB", (40, 30), (i * 40, 100, 200)).save(folder / f"{i}.png")
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu-mem", "1G", "--arch", "resnet18", "--size", "32", "--device", "cpu",
                         "--effective-bs", "8", "--data", tmp_path / "data", "-o", out)
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    assert plan["measured_on"]["synthetic_data"] is False
    assert plan["entries"][0]["micro_batch"] == 8
    loading = plan["entries"][0]["loader_time"]  # the cpu run decodes in its training process
    assert loading["workers"] == 0 and loading["images_timed"] == 12 and loading["seconds_per_image"] > 0
    assert loading["epoch_seconds"] == pytest.approx((8 + 2) * loading["seconds_per_image"], abs=1e-3)
    assert "loading" in result.stdout


@pytest.mark.slow
def test_probe_in_worker_processes_is_as_quiet_and_complete_as_in_one(planner_cli, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[[model]]\narch = "resnet18"\nsizes = [64]\n\n[[model]]\narch = "convnext_atto"\nsizes = [64]\n')
    out = tmp_path / "plan.json"
    result = planner_cli("probe", "--gpu-mem", "3G", "--models", models, "--device", "estimate", "--effective-bs", "16",
                         "--jobs", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    plan = json.loads(out.read_text())
    assert [entry["arch"] for entry in plan["entries"]] == ["resnet18", "convnext_atto"]
    assert all(entry["fits"] for entry in plan["entries"])
    assert sorted(line.split()[0] for line in result.stdout.splitlines() if "/2 " in line) == ["1/2", "2/2"]
    assert result.stderr == ""  # the workers get the CLI's warning filters (fastai's torch.jit note)


def test_probing_again_answers_from_the_stored_estimates(planner_cli, tmp_path):
    args = ("probe", "--gpu-mem", "3G", "--arch", "resnet18", "--size", "64", "--device", "estimate",
            "--effective-bs", "16")
    first = planner_cli(*args, "-o", tmp_path / "first.json")
    again = planner_cli(*args, "-o", tmp_path / "again.json")  # the same cache folder (conftest)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "(reused)" not in first.stdout and "(reused)" in again.stdout
    (before,), (after,) = (json.loads((tmp_path / name).read_text())["entries"]
                           for name in ("first.json", "again.json"))
    assert (after["micro_batch"], after["predicted_peak_bytes"]) == (
        before["micro_batch"], before["predicted_peak_bytes"])
    assert all(probe["reused"] for probe in after["probes"]) and again.stderr == ""


@pytest.mark.parametrize("output", ["/proc/x/plan.json", "/sys/foo/plan.json"])
def test_an_output_on_a_virtual_file_system_is_refused_before_probing(planner_cli, output):
    """As root os.access calls /proc and /sys writable; the probe used to run, then fail in a traceback."""
    if not Path(output).parents[-2].is_dir():
        pytest.skip(f"no {Path(output).parents[-2]} here")
    result = planner_cli("probe", "--arch", "resnet18", "--size", "32", "--gpu-mem", "1G", "--device", "estimate",
                         "-o", output)
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == ""  # no probe ran (rich 13.0 ends a disabled progress with a blank line)
    assert result.stderr.startswith(f"error: -o {output} cannot be written (") and result.stderr.count("\n") == 1
    assert result.stderr.rstrip().endswith("choose another place"), result.stderr
