"""Bad inputs and faults as a new user meets them, tried on several versions of planner (issue 13's table).

Each case builds its input in a fresh folder, runs the real CLI (``python -m planner``) from a source
tree, and records the exit code, the last line of stderr, whether a traceback was printed, and which
files the command left that were not there before ("written"). Trees are named commits, exported with
``git archive`` (e.g. ``filed=0ad9856``: when issue 13 was filed), and ``now``: the working tree unless
named too (``now=HEAD``).

Usage::

    python -m benchmarks.robustness.inputs_tried --commit filed=0ad9856 --commit start=9bcad35 [--only ID ...]
                                      [--out benchmarks/results/inputs_tried.json]
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.paths import REPO, RESULTS
from tests.run_data import make_image_folder
from tests.tune_weights_data import informative_and_noise, write_run

TRAIN = ("--no-pretrained", "--epochs", "1", "--device", "cpu")


@dataclass(frozen=True)
class Case:
    """One input or fault: its id, the line of the issue it belongs to, what is tried, and how."""

    id: str
    line: str
    tried: str
    setup: Callable[[Path, Fixtures], tuple]  # builds the input in the folder, returns the CLI's arguments
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fixtures:
    """Inputs shared by the cases, built once: a data folder, predictions, a trained run folder."""

    data: Path
    preds: Path
    trained: Path | None


def plan_json(entries: list[dict], data: Path | None = None) -> dict:
    """A minimal plan every version reads (only fields the oldest tree knows)."""
    import fastai
    import timm
    import torch

    plan = {"version": 1, "budget_bytes": 2**30, "margin": 0.1, "effective_batch_size": 8,
            "measured_on": {"device": "cpu", "precision": "fp32", "torch": torch.__version__,
                            "timm": timm.__version__, "fastai": fastai.__version__},
            "entries": entries, "created": "2026-01-01T00:00:00+00:00"}
    if data is not None:
        plan["data"] = str(data)
    return plan


def entry(arch: str, fits: bool = True) -> dict:
    return {"name": f"{arch}-crop40-32", "arch": arch, "item": {"resize": 40, "method": "crop"}, "size": [32, 32],
            "accum": 2, "micro_batch": 4, "predicted_peak_bytes": 200 * 2**20 if fits else None, "fits": fits,
            "headroom_bytes": 0 if fits else None}


def write(path: Path, content: str | bytes | dict, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content, indent=2)
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
MODELS_TOML = '[[model]]\narch = "resnet18"\nsizes = [32]\n# café\n'


def good_plan(folder: Path, fx: Fixtures) -> Path:
    return write(folder / "plan.json", plan_json([entry("resnet18")]))


def sample_case(content: bytes | None, directory: bool = False) -> Callable:
    def setup(folder: Path, fx: Fixtures) -> tuple:
        data = Path(shutil.copytree(fx.data, folder / "data"))
        (data / "sample_submission.csv").unlink()
        if directory:
            (data / "sample_submission.csv").mkdir()
        else:
            write(data / "sample_submission.csv", content)
        run = Path(shutil.copytree(fx.preds, folder / "run"))
        return ("tune-weights", run, "--data", data, "--trials", "20")
    return setup


def sample_text(fx: Fixtures) -> str:
    return "image_id,label\n" + "".join(f"t{i}.png,c0\n" for i in range(10))


def npz_case(make: Callable[[Path], None]) -> Callable:
    def setup(folder: Path, fx: Fixtures) -> tuple:
        run = Path(shutil.copytree(fx.preds, folder / "run"))
        make(run / "preds" / "c.npz")
        return ("tune-weights", run, "--trials", "20")
    return setup


def plan_case(content: str | bytes | dict, encoding: str = "utf-8", directory: bool = False) -> Callable:
    def setup(folder: Path, fx: Fixtures) -> tuple:
        if directory:
            (folder / "plan.json").mkdir()
        else:
            write(folder / "plan.json", content, encoding)
        return ("run", folder / "plan.json", "--data", fx.data, "--out", folder / "run", *TRAIN)
    return setup


def models_case(content: str | bytes, encoding: str = "utf-8", directory: bool = False) -> Callable:
    def setup(folder: Path, fx: Fixtures) -> tuple:
        if directory:
            (folder / "models.toml").mkdir()
        else:
            write(folder / "models.toml", content, encoding)
        return ("probe", "--gpu-mem", "1G", "--device", "cpu", "--models", folder / "models.toml", "-o",
                folder / "plan.json")
    return setup


def storage_case(url: Callable[[Path], str]) -> Callable:
    def setup(folder: Path, fx: Fixtures) -> tuple:
        run = Path(shutil.copytree(fx.preds, folder / "run"))
        write(folder / "notes.csv", "a,b\n1,2\n")
        (folder / "adir").mkdir()
        return ("tune-weights", run, "--trials", "20", "--storage", url(folder))
    return setup


def immutable(folder: Path) -> Path:
    """A folder even root cannot write in (ext4's immutable flag)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    return folder


def webp_data(folder: Path, fx: Fixtures) -> Path:
    from PIL import Image

    data = Path(shutil.copytree(fx.data, folder / "data"))
    for path in sorted((data / "train_images").rglob("*.png")):
        Image.open(path).save(path.with_suffix(".webp"))
        path.unlink()
    return data


def truncated_jpeg(folder: Path, fx: Fixtures) -> tuple:
    from PIL import Image

    data = Path(shutil.copytree(fx.data, folder / "data"))
    victim = sorted((data / "train_images" / "c1").glob("*.png"))[0]
    jpeg = victim.with_suffix(".jpg")
    Image.open(victim).save(jpeg, quality=95)
    victim.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    write(folder / "plan.json", plan_json([entry("resnet18")]))
    return ("run", folder / "plan.json", "--data", data, "--out", folder / "run", *TRAIN)


def second_writer(folder: Path, fx: Fixtures) -> tuple:
    """Starts a first `planner run` in the background; the case's command is the second one."""
    plan = write(folder / "plan.json", plan_json([entry("resnet18"), entry("convnext_atto")]))
    command = ("run", plan, "--data", fx.data, "--out", folder / "run", *TRAIN)
    return ("__second__", *command)


def mixed_set(folder: Path, fx: Fixtures) -> tuple:
    """An interruption between submission.csv and weights.json: a new study's submission and PNG beside
    the previous study's weights.json (the state a kill after the first two renames leaves)."""
    run = Path(shutil.copytree(fx.trained, folder / "run"))
    return ("__mixed__", run, fx.data)


def rows_reordered(folder: Path, fx: Fixtures) -> tuple:
    run = Path(shutil.copytree(fx.preds, folder / "run"))
    path = run / "preds" / "b.npz"
    with np.load(path) as npz:
        arrays = dict(npz)
    order = np.arange(len(arrays["test_names"]))[::-1]
    arrays["test_names"], arrays["test_probs"] = arrays["test_names"][order], arrays["test_probs"][order]
    np.savez(path, **arrays)
    return ("tune-weights", run, "--trials", "20")


# Issue 23: results that stay true to their data.
TWO = ("resnet18", "convnext_atto")


def sized_plan(folder: Path, micro_batch: int, accum: int) -> Path:
    plan = plan_json([{**entry("resnet18"), "micro_batch": micro_batch, "accum": accum}])
    return write(folder / "plan.json", {**plan, "effective_batch_size": micro_batch * accum})


def run_args(plan: Path, data: Path, folder: Path, *extra: str) -> tuple:
    return ("run", plan, "--data", data, "--out", folder / "run", *TRAIN, *extra)


def copied_data(folder: Path, fx: Fixtures) -> Path:
    return Path(shutil.copytree(fx.data, folder / "data"))


def test_images_added(folder: Path, fx: Fixtures) -> tuple:
    """Trained while test_images/ was empty; the test images arrive; the same run; then tune-weights."""
    data = copied_data(folder, fx)
    shutil.move(data / "test_images", folder / "later")
    (data / "test_images").mkdir()
    plan = write(folder / "plan.json", plan_json([entry(arch) for arch in TWO]))

    def add_tests(_last: object) -> None:
        for path in (folder / "later").iterdir():
            shutil.copy(path, data / "test_images" / path.name)

    return ("__steps__", run_args(plan, data, folder), add_tests, run_args(plan, data, folder),
            ("tune-weights", folder / "run", "--data", data, "--trials", "20"))


def class_added(folder: Path, fx: Fixtures) -> tuple:
    """A class folder added between two runs of the same command."""
    data = copied_data(folder, fx)
    plan = good_plan(folder, fx)

    def add_class(_last: object) -> None:
        (data / "train_images" / "c9").mkdir()
        for path in sorted((data / "train_images" / "c0").iterdir())[:3]:
            shutil.copy(path, data / "train_images" / "c9" / path.name)

    return ("__steps__", run_args(plan, data, folder), add_class, run_args(plan, data, folder))


def advice_followed(folder: Path, fx: Fixtures) -> tuple:
    """--no-save-models, `planner predict`, the command its error advises, `planner predict` again."""
    plan = good_plan(folder, fx)
    predict = ("predict", folder / "run", fx.data / "test_images", "-o", folder / "p.csv")

    def advised(last: subprocess.CompletedProcess) -> tuple:
        said = last.stderr
        if "planner run " in said and "--retrain" in said:  # the command the error names, as given
            import shlex

            words = shlex.split(said[said.index("planner run "):].strip().splitlines()[0])
            return (*words[1:], "--device", "cpu")
        return run_args(plan, fx.data, folder)  # "run `planner run` without --no-save-models"

    return ("__steps__", run_args(plan, fx.data, folder, "--no-save-models"), predict, advised, predict)


def stale_weights(folder: Path, fx: Fixtures) -> tuple:
    """Tuned with two entries; a third trained into the folder; then `planner predict`."""
    two = write(folder / "two.json", plan_json([entry(arch) for arch in TWO]))
    third = {**entry("resnet18"), "name": "resnet18-again"}
    three = write(folder / "three.json", plan_json([entry(arch) for arch in TWO] + [third]))
    run = folder / "run"
    return ("__steps__", run_args(two, fx.data, folder), ("tune-weights", run, "--data", fx.data, "--trials", "20"),
            run_args(three, fx.data, folder), ("predict", run, fx.data / "test_images", "-o", folder / "p.csv"))


def corrupt_tests(folder: Path, fx: Fixtures) -> tuple:
    data = copied_data(folder, fx)
    for name in ("img_1.png", "img_3.png", "img_4.png"):
        write(data / "test_images" / name, b"not an image")
    return run_args(good_plan(folder, fx), data, folder)


def broken_link(folder: Path, fx: Fixtures) -> tuple:
    data = copied_data(folder, fx)
    (data / "train_images" / "c1" / "linked.png").symlink_to(folder / "gone.png")
    return run_args(good_plan(folder, fx), data, folder)


def renamed_arch(folder: Path, fx: Fixtures) -> tuple:
    old = {**entry("convnext_atto"), "arch": "convnext_tiny_in22ft1k", "name": "old-name"}
    return run_args(write(folder / "plan.json", plan_json([old])), fx.data, folder)


def cases() -> list[Case]:
    l1, l8 = "1 inputs", "8 first commands"
    t1, t2, t3, t4, t5, t6 = ("23.1 every fit trains", "23.2 data changes", "23.3 advice that works",
                              "23.4 submission shapes", "23.5 weights match the run", "23.6 smaller")
    return [
        # Issue 23, item by item.
        Case("split_no_batch", t1, "30 training images, micro-batch 32 × 2 (the loader gives no batch)",
             lambda f, fx: run_args(sized_plan(f, 32, 2), fx.data, f)),
        Case("split_no_step", t1, "30 training images, micro-batch 16 × 2 (GradientAccumulation(32) never steps)",
             lambda f, fx: run_args(sized_plan(f, 16, 2), fx.data, f)),
        Case("valid_99", t1, "`--valid-pct 0.99` (3 training images, effective batch 8)",
             lambda f, fx: run_args(good_plan(f, fx), fx.data, f, "--valid-pct", "0.99")),
        Case("test_added", t2, "trained while test_images/ was empty, test images added, the same `planner run`, "
             "then `planner tune-weights`", test_images_added),
        Case("class_added", t2, "a class folder added, then the same `planner run`", class_added),
        Case("advice_circle", t3, "`--no-save-models`, `planner predict`, the command its error advises, "
             "`planner predict` again", advice_followed),
        Case("micro_batch_1", t3, "a plan with micro_batch 1 (the probe never writes it)",
             lambda f, fx: run_args(write(f / "plan.json", {**plan_json([{**entry("resnet18"), "micro_batch": 1,
                                                                          "accum": 8}])}), fx.data, f)),
        Case("ids_no_ext", t4, "sample_submission.csv ids without file extensions",
             lambda f, fx: sample_case(sample_text(fx).replace(".png", "").encode())(f, fx)),
        Case("ids_swapped", t4, "sample_submission.csv with the label column first",
             lambda f, fx: sample_case(("label,image_id\n" + "".join(f"c0,t{i}.png\n" for i in range(10)))
                                       .encode())(f, fx)),
        Case("stale_weights", t5, "weights.json tuned on two entries, a third trained into the run, then "
             "`planner predict`", stale_weights),
        Case("corrupt_tests", t6, "three corrupt test images", corrupt_tests),
        Case("broken_link", t6, "a broken symbolic link in train_images/c1", broken_link),
        Case("renamed_arch", t6, "a plan naming an architecture timm renamed (convnext_tiny_in22ft1k), Python's "
             "default warning filters", renamed_arch, env=(("PYTHONWARNINGS", "default"),)),
        Case("ctrl_c", t6, "Ctrl-C while an entry trains",
             lambda f, fx: ("__interrupt__", "run", good_plan(f, fx), "--data", fx.data, "--out", f / "run",
                            "--no-pretrained", "--epochs", "20", "--device", "cpu")),
        Case("effective_bs_1", t6, "`planner probe --effective-bs 1`",
             lambda f, fx: ("probe", "--gpu-mem", "1G", "--device", "cpu", "--arch", "resnet18", "--size", "32",
                            "--effective-bs", "1", "-o", f / "p.json")),
        # The "Why" list, line by line.
        Case("fits_false", "why: fits:false entry", "plan with a `fits: false` entry (null peak) beside one that fits",
             lambda f, fx: ("run", write(f / "plan.json", plan_json([entry("resnet18"),
                                                                      entry("convnext_atto", False)])),
                            "--data", fx.data, "--out", f / "run", *TRAIN)),
        Case("unknown_arch", "why: non-OOM entry error", "plan entry with an architecture timm does not have",
             lambda f, fx: ("run", write(f / "plan.json", plan_json([entry("resnet_nope"), entry("resnet18")])),
                            "--data", fx.data, "--out", f / "run", *TRAIN)),
        Case("truncated_jpeg", "why: non-OOM entry error", "a JPEG cut in half in train_images (PIL's verify passes)",
             truncated_jpeg),
        Case("out_is_dir", "why: -o/--out unwritable", "probe -o an existing folder",
             lambda f, fx: ((f / "out").mkdir(), ("probe", "--gpu-mem", "1G", "--device", "cpu", "--arch", "resnet18",
                                                  "--size", "32", "-o", f / "out"))[1]),
        Case("out_readonly", "why: -o/--out unwritable", "probe -o into a read-only folder (chattr +i)",
             lambda f, fx: ("probe", "--gpu-mem", "1G", "--device", "cpu", "--arch", "resnet18", "--size", "32",
                            "-o", immutable(f / "ro") / "plan.json")),
        Case("run_out_is_file", "why: -o/--out unwritable", "run --out an existing file",
             lambda f, fx: ("run", good_plan(f, fx), "--data", fx.data, "--out", write(f / "taken", "x"), *TRAIN)),
        Case("two_writers", "why: two runs on one folder", "a second `planner run` on a folder a first one is training",
             second_writer),
        Case("mixed_set", "why: interrupted output set", "new submission.csv + weights.png beside the previous "
             "study's weights.json, then `planner predict`", mixed_set),
        Case("nfs_study", "why: SQLite on a shared FS", "run folder on NFS (no NFS here: see "
             "tests/ensemble/test_storage.py)",
             lambda f, fx: ("__skip__",)),
        Case("env_switch", "why: test switches in the CLI", "PLANNER_CPU_MEMORY_LIMIT=1M set in the environment",
             lambda f, fx: ("run", good_plan(f, fx), "--data", fx.data, "--out", f / "run", *TRAIN),
             env=(("PLANNER_CPU_MEMORY_LIMIT", "1M"),)),
        Case("ray_no_gpu", "why: ray needs --gpus-per-entry 0", "`--backend ray` on a machine without GPUs",
             lambda f, fx: ("run", good_plan(f, fx), "--data", fx.data, "--out", f / "run", "--backend", "ray",
                            *TRAIN)),
        Case("rows_reordered", "why: test rows in another order", "one npz lists the same test files reversed",
             rows_reordered),
        Case("run_short", l8, "`planner run plan.json` alone (data folder recorded in the plan)",
             lambda f, fx: ("run", write(f / "plan.json", plan_json([entry("resnet18")], data=fx.data)), *TRAIN)),
        Case("tune_short", l8, "`planner tune-weights` alone, in a folder holding runs/r1",
             lambda f, fx: (shutil.copytree(fx.trained, f / "runs" / "r1"), ("__cwd__", f, "tune-weights",
                                                                             "--trials", "20"))[1]),
        Case("version", l8, "`planner --version`", lambda f, fx: ("--version",)),
        # Item 1: every input a user hands in.
        Case("budget_bare", l1, "--gpu-mem 16 (no unit)",
             lambda f, fx: ("probe", "--gpu-mem", "16", "--arch", "resnet18", "--size", "32", "-o", f / "p.json")),
        Case("budget_word", l1, "--gpu-mem lots", lambda f, fx: ("probe", "--gpu-mem", "lots", "-o", f / "p.json")),
        Case("models_latin1", l1, "models file in Latin-1", models_case(MODELS_TOML, "latin-1")),
        Case("models_bom", l1, "models file with a UTF-8 BOM", models_case(codecs.BOM_UTF8 + MODELS_TOML.encode())),
        Case("models_png", l1, "a PNG named models.toml", models_case(PNG)),
        Case("models_empty", l1, "empty models file", models_case("")),
        Case("models_dir", l1, "models.toml is a folder", models_case("", directory=True)),
        Case("plan_csv", l1, "a CSV named plan.json", plan_case("image_id,label\na.png,c0\n")),
        Case("plan_png", l1, "a PNG named plan.json", plan_case(PNG)),
        Case("plan_empty", l1, "empty plan.json", plan_case("")),
        Case("plan_dir", l1, "plan.json is a folder", plan_case("", directory=True)),
        Case("plan_latin1", l1, "plan.json in Latin-1 (an é in a name)",
             lambda f, fx: plan_case(json.dumps(plan_json([{**entry("resnet18"), "name": "résnet"}]),
                                                ensure_ascii=False), "latin-1")(f, fx)),
        Case("plan_bom", l1, "plan.json with a UTF-8 BOM (valid otherwise)",
             lambda f, fx: plan_case(codecs.BOM_UTF8 + json.dumps(plan_json([entry("resnet18")])).encode())(f, fx)),
        Case("plan_list", l1, "plan.json holding a JSON list", plan_case("[1, 2]")),
        Case("plan_v2", l1, "plan.json of version 2", plan_case({**plan_json([entry("resnet18")]), "version": 2})),
        Case("plan_type", l1, 'plan entry with "accum": "two"',
             plan_case(plan_json([{**entry("resnet18"), "accum": "two"}]))),
        Case("data_is_file", l1, "--data names a file",
             lambda f, fx: ("run", good_plan(f, fx), "--data", write(f / "d.txt", "x"), "--out", f / "run", *TRAIN)),
        Case("webp", l1, "training images saved as .webp (the probe used them)",
             lambda f, fx: ("run", good_plan(f, fx), "--data", webp_data(f, fx), "--out", f / "run", *TRAIN)),
        Case("sample_latin1", l1, "sample_submission.csv in Latin-1",
             lambda f, fx: sample_case(sample_text(fx).replace("image_id", "imagé_id").encode("latin-1"))(f, fx)),
        Case("sample_bom", l1, "sample_submission.csv with a UTF-8 BOM (valid otherwise)",
             lambda f, fx: sample_case(codecs.BOM_UTF8 + sample_text(fx).encode())(f, fx)),
        Case("sample_png", l1, "a PNG named sample_submission.csv", sample_case(PNG)),
        Case("sample_empty", l1, "empty sample_submission.csv", sample_case(b"")),
        Case("sample_dir", l1, "sample_submission.csv is a folder", sample_case(None, directory=True)),
        Case("npz_png", l1, "a PNG named preds/c.npz", npz_case(lambda p: write(p, PNG))),
        Case("npz_empty", l1, "empty preds/c.npz", npz_case(lambda p: write(p, b""))),
        Case("npz_dir", l1, "preds/c.npz is a folder", npz_case(lambda p: p.mkdir())),
        Case("npz_text", l1, "a text file named preds/c.npz", npz_case(lambda p: write(p, "a,b\n"))),
        Case("storage_garbage", l1, "--storage notaurl", storage_case(lambda f: "notaurl")),
        Case("storage_missing_dir", l1, "--storage sqlite:///FOLDER/missing/x.db",
             storage_case(lambda f: f"sqlite:///{f}/missing/x.db")),
        Case("storage_dir", l1, "--storage sqlite:///A_FOLDER", storage_case(lambda f: f"sqlite:///{f}/adir")),
        Case("storage_csv", l1, "--storage sqlite:///notes.csv (not a database)",
             storage_case(lambda f: f"sqlite:///{f}/notes.csv")),
        Case("tune_readonly", l1, "tune-weights on a read-only run folder (e.g. Kaggle's /kaggle/input)",
             lambda f, fx: ("__immutable__", Path(shutil.copytree(fx.preds, f / "run")), "tune-weights",
                            f / "run", "--trials", "20")),
        Case("run_json_damaged", l1, "run.json cut in half, then the same `planner run`",
             lambda f, fx: ("__damage__", "run.json", "run", good_plan(f, fx), "--data", fx.data, "--out", f / "run",
                            *TRAIN)),
        Case("split_latin1", l1, "split.json rewritten in Latin-1, then the same `planner run`",
             lambda f, fx: ("__damage__", "split.json", "run", good_plan(f, fx), "--data", fx.data, "--out",
                            f / "run", *TRAIN)),
        Case("weights_damaged", l1, "weights.json cut in half, then `planner predict`",
             lambda f, fx: ("__weights__", Path(shutil.copytree(fx.trained, f / "run")), fx.data)),
        Case("predict_out_dir", l1, "`planner predict RUN IMAGES -o` an existing folder",
             lambda f, fx: ((f / "o").mkdir(), ("predict", shutil.copytree(fx.trained, f / "run"),
                                                fx.data / "test_images", "-o", f / "o"))[1]),
    ]


def listing(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if "__pycache__" not in path.parts and path.is_file()}


def cli(tree: Path, args: tuple, env: dict, cwd: Path | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
            "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "planner", *map(str, args)], cwd=cwd or tree, env=full,
                          capture_output=True, text=True, timeout=timeout)


def try_case(case: Case, tree: Path, folder: Path, fx: Fixtures) -> dict:
    folder.mkdir(parents=True)
    args = case.setup(folder, fx)
    env = dict(case.env)
    if args[0] == "__skip__":
        return {"skipped": "cannot be tried on this machine"}
    before = listing(folder)
    cwd = None
    note = None
    if args[0] == "__cwd__":
        cwd, args = args[1], args[2:]
    if args[0] == "__second__":
        first = subprocess.Popen([sys.executable, "-m", "planner", *map(str, args[1:])], cwd=tree,
                                 env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1",
                                      "PYTHONWARNINGS": "ignore"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        run_json = Path(args[args.index("--out") + 1]) / "run.json"
        while not run_json.exists() and first.poll() is None:
            time.sleep(0.05)
        time.sleep(2)
        done = cli(tree, args[1:], env)
        _first_out, first_err = first.communicate(timeout=900)
        note = f"first run exit {first.returncode}; {first_err.strip().splitlines()[-1] if first_err.strip() else ''}"
    elif args[0] == "__steps__":
        *steps, final = args[1:]
        last = None
        for step in steps:  # commands, or callables that change the inputs (given the last result)
            command = step(last) if callable(step) else step
            if command:
                last = cli(tree, command, env)
        before = listing(folder)
        done = cli(tree, final(last) if callable(final) else final, env)
        note = f"steps before: exit {last.returncode}" if last is not None else None
    elif args[0] == "__interrupt__":
        command = args[1:]
        process = subprocess.Popen([sys.executable, "-m", "planner", *map(str, command)], cwd=tree,
                                   env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1",
                                        "PYTHONWARNINGS": "ignore", "COLUMNS": "200"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_json = Path(command[command.index("--out") + 1]) / "run.json"
        while '"running"' not in (run_json.read_text() if run_json.exists() else "") and process.poll() is None:
            time.sleep(0.05)
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=900)
        done = subprocess.CompletedProcess(command, process.returncode, out, err)
        status = json.loads(run_json.read_text())["entries"] if run_json.exists() else {}
        note = "run.json: " + ", ".join(f"{name} {entry['status']}" for name, entry in status.items())
    elif args[0] == "__immutable__":
        run = args[1]
        subprocess.run(["chattr", "+i", str(run)], check=True)
        try:
            done = cli(tree, args[2:], env)
        finally:
            subprocess.run(["chattr", "-i", str(run)], check=True)
    elif args[0] == "__damage__":
        target, command = args[1], args[2:]
        first = cli(tree, command, env)
        run_dir = Path(command[command.index("--out") + 1])
        path = run_dir / target
        if target == "run.json":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        else:
            data = json.loads(path.read_text())
            data["valid"][0] = data["valid"][0].replace("img", "imgé")
            path.write_bytes(json.dumps(data, ensure_ascii=False).encode("latin-1"))
        before = listing(folder)
        done = cli(tree, command, env)
        note = f"first run exit {first.returncode}"
    elif args[0] == "__mixed__":
        run, data = args[1], args[2]
        first = cli(tree, ("tune-weights", run, "--trials", "10", "--data", data), env)
        kept = (run / "weights.json").read_bytes() if (run / "weights.json").exists() else None
        second = cli(tree, ("tune-weights", run, "--trials", "60", "--seed", "7", "--force-weights", "--data", data),
                     env)
        if kept is not None:
            (run / "weights.json").write_bytes(kept)
        before = listing(folder)
        done = cli(tree, ("predict", run, data / "test_images", "-o", folder / "p.csv"), env)
        note = f"tune-weights exits {first.returncode}, {second.returncode}"
    elif args[0] == "__weights__":
        run, data = args[1], args[2]
        first = cli(tree, ("tune-weights", run, "--trials", "10", "--data", data), env)
        path = run / "weights.json"
        if path.exists():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        before = listing(folder)
        done = cli(tree, ("predict", run, data / "test_images", "-o", folder / "p.csv"), env)
        note = f"tune-weights exit {first.returncode}"
    else:
        done = cli(tree, args, env, cwd=cwd)
    lines = [line.strip(" │╭╰╮╯─") for line in done.stderr.strip().splitlines()]  # typer draws boxes
    lines = [line for line in lines if any(char.isalnum() for char in line)]
    out_lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    written = sorted(listing(folder) - before)
    return {"exit": done.returncode, "stderr_last": lines[-1][:400] if lines else "",
            "stdout_last": out_lines[-1][:300] if out_lines else "", "traceback": "Traceback" in done.stderr,
            "stderr_lines": len(lines), "written": written[:12], "note": note,
            "failed_entries": [line[:300] for line in out_lines
                               if line.startswith(("failed ", "skip ", "re-predict ", "interrupted "))][:4],
            "warnings": [line[:300] for line in lines if "Warning" in line]}


def cell(outcome: dict, detail: bool) -> str:
    """One table cell: how the command ended, and (``detail``) its last line with paths shortened."""
    if "skipped" in outcome or "setup_error" in outcome:
        return outcome.get("skipped") or outcome["setup_error"]
    code = outcome["exit"]
    if outcome["traceback"]:
        text = f"traceback ({outcome['stderr_lines']} lines), exit {code}"
    elif outcome["stderr_last"].startswith("error: "):
        text = f"one line, exit {code}"
    elif outcome["stderr_last"] and code == 2:
        text = f"usage error, exit {code}"
    else:
        text = f"exit {code}"
    message = outcome["stderr_last"] or (outcome["failed_entries"] or [""])[0]
    if outcome["traceback"]:
        message = outcome["stderr_last"]
    if outcome.get("warnings") and not outcome["traceback"]:
        said = [re.sub(r"^.*site-packages/", "", warning)[:110] for warning in outcome["warnings"]]
        text += f", {len(said)} warning(s) on stderr: " + "; ".join(f"“{warning}”" for warning in said)
    if detail and message:
        text += f": “{re.sub(r'/tmp/inputs_tried_[^/]+/cases/[^/]+/[^/ ]+/', '', message)[:170]}”"
    written = [name for name in outcome["written"] if not name.endswith(("run.log", ".png", ".safetensors"))]
    if written:
        text += f"; wrote {', '.join(written[:4])}{' …' if len(written) > 4 else ''}"
    if outcome.get("note"):
        text += f" ({outcome['note'].strip('; ')})"
    return text.replace("|", "\\|")


def table(results: dict, trees: list[str]) -> str:
    """The results as a markdown table, one row per case."""
    rows = ["| line | tried | " + " | ".join(trees) + " |", "| --- | --- | " + " | ".join("---" for _ in trees) + " |"]
    for outcome in results.values():
        cells = [cell(outcome["trees"][tree], detail=tree == trees[-1] or outcome["trees"][tree].get("traceback"))
                 if tree in outcome["trees"] else "-" for tree in trees]
        rows.append(f"| {outcome['line']} | {outcome['tried']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def export(commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", action="append", default=[], metavar="NAME=SHA")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "inputs_tried.json")
    parser.add_argument("--table", nargs="+", metavar="TREE", help="print --out's results as a markdown table")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text()), args.table))
        return
    chosen = [case for case in cases() if args.only is None or case.id in args.only]
    results: dict[str, dict] = json.loads(args.out.read_text()) if args.out.exists() and args.only else {}
    with tempfile.TemporaryDirectory(prefix="inputs_tried_") as tmp:
        root = Path(tmp)
        trees = {name: export(sha, root / "trees" / name) for name, sha in (c.split("=", 1) for c in args.commit)}
        trees.setdefault("now", REPO)
        data = make_image_folder(root / "data")
        probs, targets = informative_and_noise(rows=120, classes=3)
        preds = write_run(root / "preds", ["a", "b"], probs, targets)
        trained = None
        if any(case.id in ("mixed_set", "tune_short", "weights_damaged", "predict_out_dir") for case in chosen):
            oldest_with_predict = trees.get("start", REPO)
            plan = write(root / "trained_plan.json", plan_json([entry("resnet18"), entry("convnext_atto")]))
            made = cli(oldest_with_predict, ("run", plan, "--data", data, "--out", root / "trained", *TRAIN), {})
            trained = root / "trained" if made.returncode == 0 else None
        fx = Fixtures(data=data, preds=preds, trained=trained)
        for case in chosen:
            results.setdefault(case.id, {"line": case.line, "tried": case.tried, "trees": {}})
            results[case.id].update(line=case.line, tried=case.tried)
            for name, tree in trees.items():
                folder = root / "cases" / case.id / name
                try:
                    outcome = try_case(case, tree, folder, fx)
                except Exception as error:  # a setup that cannot run on this tree is recorded, not fatal
                    outcome = {"setup_error": f"{type(error).__name__}: {error}"}
                finally:
                    subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
                results[case.id]["trees"][name] = outcome
                print(case.id, name, json.dumps(outcome)[:300], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
