"""The lock that keeps a second writer out of a run folder.

The live writer holds `.iiae-lock` (pid + host, under an exclusive `flock`): the kernel drops the flock when the
process dies, so a dead holder's lock is recognised and taken over, and a live one refuses a second trainer.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Optional

from iiae.errors import UserError

LOCK = ".iiae-lock"


class RunLock:
    """Exclusive right to write into a run folder, for the life of the process (`release` ends it early).

    The lock file holds the holder's pid and host; the `flock` on it is what proves the holder alive."""

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"{self.path.parent}: another live process writes this run ({holder}); "
                            f"wait for it to end or stop it first") from None
        previous = _read_holder(fd)
        if previous:  # the file outlived its holder (killed, machine crashed): the flock says it is gone
            print(f"notice: took over the lock of a run that ended without releasing it ({previous})", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _open_lock(path: Path) -> int:
    """The lock file, opened without following a link (truncating it would empty the link's target: as root, any
    file) and refused unless it is a regular file of its own (a hard link's other name would be emptied too)."""
    what = f"the run's lock file (a regular file the engine writes; remove whatever is at {path.name})"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        kind = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a folder"}.get(err.errno)
        raise UserError(f"{path}: {kind or f'cannot be opened ({err.strerror or err})'}; expected {what}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        kind = "is a hard link to another file" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise UserError(f"{path}: {kind}; expected {what}")
    os.set_blocking(fd, True)
    return fd


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {holder['pid']} on {holder['host']}" if holder else ""
    except (ValueError, KeyError, TypeError):
        return "unknown holder"
