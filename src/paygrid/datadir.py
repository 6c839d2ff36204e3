"""The data dir holds secrets (the database, the KEK, channel keys, the demo merchant's
credentials): everything in it is owner-only, 0700 directories and 0600 files.

Processes paygrid starts run under umask 077 (set at the CLI's entry), so what they create is
owner-only; files holding secrets are also created with an explicit mode; and a data dir from
an older version is tightened on start. The one exception: when paygrid runs as root and
starts PostgreSQL itself, PostgreSQL runs as the ``postgres`` user and must traverse the data
dir to reach its own (0700, postgres-owned) directory, so the data dir is 0710 with the
``postgres`` group: search only, no listing, nothing readable.
"""

from __future__ import annotations

import grp
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)
PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
TRAVERSE_MODE = 0o710  # owner all, one group may pass through, nobody may list


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path, traverse_group: str | None = None) -> Path:
    """Create ``path`` (and its missing parents) owner-only; tighten it if it exists."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if traverse_group is None:
        path.chmod(DIR_MODE)
    else:
        os.chown(path, -1, grp.getgrnam(traverse_group).gr_gid)
        path.chmod(TRAVERSE_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``text``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def secure(data_dir: Path, traverse_group: str | None = None) -> int:
    """Make ``data_dir`` private and remove group/other permissions from everything in it
    (symlinks are not followed). Returns how many entries were tightened."""
    private_dir(data_dir, traverse_group)
    changed = 0
    for root, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            changed += _tighten(Path(root) / name)
    if changed:
        log.info("removed group/other permissions from %d entries under %s", changed, data_dir)
    return changed


def _tighten(path: Path) -> int:
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
            return 0
        path.chmod(stat.S_IMODE(st.st_mode) & ~0o077)
    except FileNotFoundError:  # a process of ours removed it meanwhile
        return 0
    except PermissionError:
        log.warning("cannot make %s owner-only: it belongs to another user", path)
        return 0
    return 1
