"""Which file system a path lives on, from the kernel's mount table, and whether it is a network one.

SQLite's locking and its write-ahead log need the local kernel to see every writer: on NFS, CIFS/SMB,
and other network or cluster file systems, locks are emulated or missing and the WAL's shared-memory
index does not work across machines (sqlite.org, "WAL": "does not work over a network filesystem").
``planner tune-weights`` therefore keeps a SQLite study on a local disk when the run folder is on one
of these (``planner.ensemble.storage``).

The mount table is ``/proc/mounts`` (Linux): one line per mount, ``SOURCE POINT FSTYPE OPTIONS 0 0``,
spaces and tabs in names written as octal escapes (``\\040``). A path belongs to the mount with the
longest mount point that contains it. Without ``/proc/mounts`` (macOS, Windows) nothing is detected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROC_MOUNTS = Path("/proc/mounts")
NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "davfs", "coda", "glusterfs", "ceph",
    "lustre", "gpfs", "beegfs", "ocfs2", "gfs2", "orangefs", "pvfs2",
})
# FUSE file systems are named fuse.<program>; these programs reach over a network.
NETWORK_FUSE = frozenset({
    "sshfs", "glusterfs", "cephfs", "ceph", "s3fs", "gcsfuse", "goofys", "juicefs", "rclone", "davfs", "smbnetfs",
    "blobfuse", "blobfuse2", "mountpoint-s3", "lizardfs", "moosefs", "seaweedfs",
})


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    source: str
    point: Path
    fstype: str

    @property
    def network(self) -> bool:
        """Whether the file system reaches over a network (see the module docstring)."""
        kind = self.fstype.lower()
        return kind in NETWORK_TYPES or (kind.startswith("fuse.") and kind.removeprefix("fuse.") in NETWORK_FUSE)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """The mounts of a ``/proc/mounts`` text (lines that are not six fields are skipped)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(source=_unescape(fields[0]), point=Path(_unescape(fields[1])), fstype=fields[2]))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount ``path`` lives on (its nearest existing folder's, for a path not made yet)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    containing = [mount for mount in mounts if path == mount.point or mount.point in path.parents]
    # the longest mount point; among mounts on the same point, the last one (it hides the others)
    return max(reversed(containing), key=lambda mount: len(mount.point.parts), default=None)


def network_mount(path: Path, mounts_file: Path = PROC_MOUNTS) -> Mount | None:
    """The network mount ``path`` lives on, or None (a local one, or no mount table to read)."""
    try:
        mounts = parse_mounts(mounts_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    mount = mount_of(path, mounts)
    return mount if mount is not None and mount.network else None
