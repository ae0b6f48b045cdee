"""Writing files that cannot be turned against the user (docs/SECURITY.md, "never write through a link").

Every file the engine writes goes to a fresh temporary name in the destination's own folder (created with
O_EXCL | O_NOFOLLOW, so no link or existing file is ever opened for writing) and is renamed over the destination
once complete. A rename replaces a link itself, never its target, and a reader (or a SIGTERM) never sees a
half-written file. Where a run folder's own file should be, a link or a folder is refused in one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Iterator, Optional

from iiae.errors import UserError

TEMP_PREFIX = ".iiae-tmp-"  # what an interrupted write can leave behind: never a half-written destination


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


_UMASK = _umask()


def refuse_link(path: str | os.PathLike, what: Optional[str] = None) -> Path:
    """`path` itself when it is absent or a regular file; a one-line UserError for a symlink (dangling ones
    included), a folder or any other kind of file."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as err:  # ENAMETOOLONG, EACCES, ENOTDIR ...
        raise UserError(f"{path}: cannot be used ({err.strerror or err}); expected {what or 'a regular file'}") from None
    if stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a symbolic link; expected {what or 'a regular file'} (the engine never reads "
                        "or writes through a link here): remove the link")
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UserError(f"{path}: is {kind}; expected {what or 'a regular file'}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: Optional[str] = None) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (PIL, safetensors, numpy): renamed over
    `path` when the block ends without error, removed otherwise. `path` must not be a link or a folder."""
    path = refuse_link(path, what)
    with _temp_beside(path) as (fd, tmp):
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, data: bytes | str, what: Optional[str] = None) -> Path:
    """Write `data` (text is UTF-8) to `path` through a temporary file and a rename; returns `path`."""
    payload = data.encode() if isinstance(data, str) else data
    path = refuse_link(path, what)
    with _temp_beside(path) as (fd, tmp):
        with os.fdopen(fd, "wb") as f:  # the descriptor mkstemp opened: nothing is looked up by name again
            f.write(payload)
        os.replace(tmp, path)
    return path


def create_new(path: str | os.PathLike, data: bytes | str) -> bool:
    """Create `path` holding `data` only if nothing (not even a dangling link) is there; False when something is."""
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    return True


def safe_dir(path: str | os.PathLike, what: Optional[str] = None) -> Path:
    """`path` as a folder the engine writes in, made (not its parents) when absent; a one-line UserError for a
    link (dangling ones included), a file or anything else there."""
    path = Path(path)
    try:
        path.mkdir()
        return path
    except FileExistsError:  # mkdir never follows a link: whatever is there is checked below
        pass
    except OSError as err:
        raise UserError(f"{path}: cannot be made ({err.strerror or err}); expected {what or 'a folder'}") from None
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a symbolic link; expected {what or 'a folder'} (the engine never writes "
                        "through a link here): remove the link")
    if not stat.S_ISDIR(mode):
        raise UserError(f"{path}: is not a folder; expected {what or 'a folder'}")
    return path


def open_append(path: str | os.PathLike, what: Optional[str] = None):
    """`path` opened for appending (created when absent) as a binary file, never through a link (O_NOFOLLOW) and
    never when it is a hard link (appending would grow the other name's file too) or not a regular file."""
    path = refuse_link(path, what)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:  # ELOOP: a link appeared since the check
        raise UserError(f"{path}: cannot be appended to ({err.strerror or err}); "
                        f"expected {what or 'a regular file'}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise UserError(f"{path}: is {'a hard link' if stat.S_ISREG(info.st_mode) else 'not a regular file'}; "
                        f"expected {what or 'a regular file'} of its own")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


def read_regular(path: str | os.PathLike, what: Optional[str] = None, hard_links: bool = True) -> bytes:
    """The bytes of `path`, opened without following a link (O_NOFOLLOW) and read only when it is a regular file:
    a one-line UserError for a link, a folder or a fifo, and, unless `hard_links`, for a hard link (another name
    of a file elsewhere: what is about to be uploaded). What is read is what the caller checks and uses: nothing
    can swap a link in between."""
    path = Path(path)
    expected = what or "a regular file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a fifo never hangs the open
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"{path}: is a symbolic link; expected {expected} (the engine never reads or writes "
                            "through a link here): remove the link") from None
        raise UserError(f"{path}: cannot be read ({err.strerror or err}); expected {expected}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: is {'a folder' if stat.S_ISDIR(info.st_mode) else 'not a regular file'}; "
                            f"expected {expected}")
        if info.st_nlink > 1 and not hard_links:
            raise UserError(f"{path}: is a hard link ({info.st_nlink} names for one file); expected {expected} "
                            "of its own")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[int, str]]:
    """(descriptor, name) of a new file in `path`'s folder, removed unless the block renamed it away (an error or
    a signal anywhere in the block included)."""
    import tempfile

    tmp = None
    try:
        try:
            # mkstemp opens with O_CREAT | O_EXCL (and O_NOFOLLOW where the OS has it): never an existing file or link
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
        except OSError as err:
            raise UserError(f"{path}: cannot be written ({err.strerror or err})") from None
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide the file from the rest of a shared machine
        yield fd, tmp
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
