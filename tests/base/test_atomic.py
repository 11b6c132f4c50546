"""Atomic writes: a reader sees the old file or the whole new one, never half; outputs are checked up front."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from planner.base.atomic import atomic_write, atomic_write_json, atomic_write_text, check_writable
from planner.base.errors import UserError


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "run.json", "old\n")

    def half_then_fail(f) -> None:
        f.write(b"ne")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_write_creates_folders_and_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "w.json"
    atomic_write_json(target, {"x": [1, 2]})
    atomic_write_json(target, {"y": 3})
    assert json.loads(target.read_text()) == {"y": 3}


def test_written_files_get_the_permissions_open_would_give(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_check_writable_refuses_a_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a folder: give a file name"):
        check_writable(tmp_path, "-o", folder=False)
    (tmp_path / "plan.json").write_text("{}")
    with pytest.raises(UserError, match="is a file: give a folder"):
        check_writable(tmp_path / "plan.json", "--out", folder=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_check_writable_refuses_a_read_only_place(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot be written"):
            check_writable(tmp_path / "new" / "plan.json", "-o", folder=False)
    finally:
        tmp_path.chmod(0o700)


def test_check_writable_accepts_a_new_path_below_a_writable_folder(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "runs" / "x", "--out", folder=True) == tmp_path / "runs" / "x"


VIRTUAL = pytest.mark.skipif(not Path("/proc/self").is_dir() or not Path("/sys/kernel").is_dir(),
                             reason="needs Linux's /proc and /sys")


@VIRTUAL
@pytest.mark.parametrize(("path", "place"), [("/proc/x/plan.json", "/proc"), ("/proc/plan.json", "/proc"),
                                             ("/sys/foo/plan.json", "/sys")])
def test_check_writable_refuses_a_virtual_file_system_even_as_root(path: str, place: str) -> None:
    """os.access says root may write anywhere; /proc and /sys take no new files, which only trying tells."""
    with pytest.raises(UserError) as refused:
        check_writable(path, "-o", folder=False)
    message = str(refused.value)
    assert message.startswith(f"-o {path} cannot be written (") and message.endswith("): choose another place")
    assert place in message.removeprefix(f"-o {path}")


@VIRTUAL
@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's answer to root; others get no permission")
def test_check_writable_says_what_the_kernel_said() -> None:
    with pytest.raises(UserError, match=r"\(cannot create folder /proc/x: No such file or directory\)"):
        check_writable("/proc/x/plan.json", "-o", folder=False)
    with pytest.raises(UserError, match=r"\(no permission in /sys\)"):
        check_writable("/sys/foo", "--out", folder=True)


def test_check_writable_refuses_a_path_through_a_file_and_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    for path in (tmp_path / "notes.txt" / "plan.json", tmp_path / "notes.txt" / "a" / "b"):
        with pytest.raises(UserError, match=f"{tmp_path / 'notes.txt'} is a file, not a folder"):
            check_writable(path, "--out", folder=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=f"{tmp_path / 'gone'} is a broken link, not a folder"):
        check_writable(tmp_path / "gone" / "plan.json", "-o", folder=False)


def test_check_writable_leaves_the_file_system_as_it_was(tmp_path: Path) -> None:
    """The check creates the missing folders and a temporary file to be sure, then removes them all."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    check_writable(tmp_path / "new" / "deeper" / "plan.json", "-o", folder=False)
    check_writable(tmp_path / "runs" / "x", "--out", folder=True)
    check_writable(tmp_path / "run", "run folder", folder=True)
    check_writable(tmp_path / "run" / "run.json", "-o", folder=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["run", "run/run.json"]
    assert (tmp_path / "run" / "run.json").read_text() == "{}"


def test_check_writable_uses_a_folder_that_exists_without_removing_it(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    check_writable(tmp_path / "out" / "a" / "plan.json", "-o", folder=False)
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())
