"""The lock that keeps a second writer out of a run folder.

The live writer holds `.iiae-lock` (pid + host, under an exclusive `flock`): the kernel drops the flock when the
process dies, so a dead holder's lock is recognised and taken over, and a live one refuses a second trainer.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Optional

from .errors import UserError

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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {holder['pid']} on {holder['host']}" if holder else ""
    except (ValueError, KeyError, TypeError):
        return "unknown holder"
