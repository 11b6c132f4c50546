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
