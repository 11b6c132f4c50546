"""Where the Optuna study lives: the mount table read for real (a temporary copy in the kernel's format),
the study kept on a local disk when the run folder is on a network file system, SQLite there refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.base.errors import UserError
from planner.base.filesystems import PROC_MOUNTS, mount_of, network_mount, parse_mounts
from planner.ensemble.storage import local_studies, study_storage


def mounts_file(tmp_path: Path, network: Path, fstype: str = "nfs4") -> Path:
    """A mount table in /proc/mounts' format: the root on ext4, ``network`` on ``fstype``, and a folder
    whose name has a space (written as \\040 by the kernel) on tmpfs."""
    spaced = str(tmp_path / "my disk").replace(" ", "\\040")
    path = tmp_path / "mounts"
    path.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        f"filer:/export/runs {network} {fstype} rw,relatime,vers=4.2,addr=10.0.0.5 0 0\n"
        f"tmpfs {spaced} tmpfs rw 0 0\n"
    )
    return path


def test_the_kernels_mount_table_parses_and_the_root_is_local() -> None:
    if not PROC_MOUNTS.exists():
        pytest.skip("no /proc/mounts on this system")
    mounts = parse_mounts(PROC_MOUNTS.read_text())
    assert any(mount.point == Path("/") for mount in mounts)
    root = mount_of(Path("/"), mounts)
    assert root is not None and root.point == Path("/")


def test_a_path_belongs_to_its_longest_mount_point(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "runs" / "r1").mkdir(parents=True)
    mounts = parse_mounts(mounts_file(tmp_path, shared).read_text())
    assert mount_of(shared / "runs" / "r1", mounts).fstype == "nfs4"
    assert mount_of(shared / "runs" / "not-made-yet" / "x", mounts).fstype == "nfs4"  # nearest existing folder
    assert mount_of(tmp_path, mounts).fstype == "ext4"
    (tmp_path / "my disk").mkdir()
    assert mount_of(tmp_path / "my disk", mounts).fstype == "tmpfs"  # \040 read as a space


@pytest.mark.parametrize(("fstype", "network"), [("nfs", True), ("nfs4", True), ("cifs", True), ("smb3", True),
                                                 ("fuse.sshfs", True), ("lustre", True), ("ext4", False),
                                                 ("xfs", False), ("tmpfs", False), ("fuse.portal", False)])
def test_network_file_systems_are_recognised(tmp_path: Path, fstype: str, network: bool) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    found = network_mount(shared, mounts_file(tmp_path, shared, fstype))
    assert (found is not None) == network


def test_a_run_folder_on_nfs_keeps_its_study_on_a_local_disk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shared = tmp_path / "shared"
    run = shared / "runs" / "r1"
    run.mkdir(parents=True)
    table = mounts_file(tmp_path, shared)
    storage = study_storage(run, None, table)
    local = Path(storage.url.removeprefix("sqlite:///"))
    assert local.parent.parent == local_studies() == tmp_path / "cache" / "planner" / "studies"
    assert local.name == "optuna.db" and local.parent.name.startswith("r1-")
    assert "network file system (nfs4)" in storage.note and str(local) in storage.note
    assert study_storage(run, None, table) == storage  # the same folder, the same study: a rerun resumes it
    assert study_storage(tmp_path / "elsewhere", None, table).url == f"sqlite:///{tmp_path / 'elsewhere' / 'optuna.db'}"


def test_a_sqlite_file_on_nfs_is_refused_and_a_server_is_not(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    table = mounts_file(tmp_path, shared)
    with pytest.raises(UserError, match=r"is on a network file system \(nfs4 from filer:/export/runs\).*postgresql"):
        study_storage(tmp_path, f"sqlite:///{shared / 'optuna.db'}", table)
    assert study_storage(shared, "postgresql://u@host/db", table).url == "postgresql://u@host/db"
