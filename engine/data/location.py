"""Where a dataset lives (`data.root`, `--data`): a local folder, or anything webdataset's `gopen` opens.

- a folder: `data/maps_64`, `~/data/maps_64`, `file:///data/maps_64`;
- HTTP(S): `https://host/datasets/maps_64` (files are `<root>/<name>`);
- a command: `pipe:aws s3 cp s3://bucket/maps_64/{} -` — `{}` stands for the file name, so any tool that writes a
  file to stdout serves a dataset (s3, gcs, hf://, ssh ...). `{}` works in URLs too.

The root is the user's; the names and bytes it serves are not: a file name is shell-quoted into a command, curl
gets its URL as one argument (no shell), and every remote read has limits no server outlasts — a connect timeout,
a stall limit (curl fails when less than 1 byte/s arrives for STALL_SECONDS), a byte cap and a budget of seconds
spent waiting for bytes (a 2 bytes/s trickle beats the stall limit, not the budget). Past the cap or the budget the
command is killed and the read raises OSError (TooLarge, TooSlow).
"""
from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO, Optional
from urllib.parse import unquote, urlparse

STALL_SECONDS = 30  # curl gives up when less than 1 byte/s arrives for this long
CONNECT_SECONDS = 10
SMALL_SECONDS = 60  # the whole of a small read: dataset.json, a HEAD request
INFO_BYTES = 8 << 20  # dataset.json (a large one lists some 10,000 shards in 2 MB)
HEADER_BYTES = 64 << 10  # a HEAD reply's headers
# waiting for one shard's bytes: SHARD_SECONDS plus one second per SHARD_RATE bytes it lists (a slow link's rate;
# UNSIZED_SHARD_BYTES when dataset.json does not say). Only time spent waiting counts, not the training between
# reads, so a slow training step never fails a shard.
SHARD_SECONDS = 60
SHARD_RATE = 64 << 10
UNSIZED_SHARD_BYTES = 1 << 30
_HTTP = ("http://", "https://")


class TooLarge(OSError):
    """More bytes arrived than the reader allows."""


class TooSlow(OSError):
    """The source took longer to send its bytes than the reader allows (it was stopped)."""


def is_remote(root: str) -> bool:
    """Not a local folder: a URL with a scheme other than file://, or a pipe: command."""
    root = str(root)
    return root.startswith("pipe:") or ("://" in root and not root.startswith("file://"))


def local_folder(root: str) -> Path:
    """The folder of a local root (`~` expanded, file:// unwrapped)."""
    root = str(root)
    if root.startswith("file://"):
        return Path(unquote(urlparse(root).path))
    return Path(os.path.expandvars(root)).expanduser()


def join(root: str, name: str) -> str:
    """The location of file `name` of the dataset at `root`: in a `pipe:` command the name is one shell word."""
    root = str(root)
    word = shlex.quote(name) if root.startswith("pipe:") else name  # a name from dataset.json is never shell code
    if "{}" in root:
        return root.replace("{}", word)
    if is_remote(root):
        return f"{root.rstrip('/')}/{word}"
    return str(local_folder(root) / name)


def shard_seconds(size: Optional[int]) -> float:
    """The waiting budget of a shard of `size` bytes (None: not listed)."""
    return SHARD_SECONDS + (UNSIZED_SHARD_BYTES if size is None else size) / SHARD_RATE


def _curl(limit: Optional[int] = None) -> list[str]:
    # argv, no shell; http(s) only, redirects included (no file:// or other scheme a server could redirect to)
    args = ["curl", "--fail", "--silent", "--show-error", "--location", "--max-redirs", "10",
            "--proto", "=http,https", "--proto-redir", "=http,https", "--connect-timeout", str(CONNECT_SECONDS),
            "--speed-limit", "1", "--speed-time", str(STALL_SECONDS)]
    if limit is not None:
        args += ["--max-filesize", str(limit)]  # refused at once when the server announces more
    return args


def _allowed(n: int, limit: Optional[int], got: int) -> int:
    """How much of a read of `n` to ask the source for: no further than the cap (a reader reads ahead, and the
    bytes it needs lie within the cap), then 1 byte, to tell the end there from more."""
    return n if limit is None else max(1, min(n, limit - got))


class _Stream(ABC):
    """A binary read stream over `_read(n)` (n > 0): `read()` / `read(-1)` reads to the end, in bounded pieces."""

    @abstractmethod
    def _read(self, n: int) -> bytes:
        """At most n bytes (b"" at the end)."""

    def read(self, n: Optional[int] = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while part := self._read(1 << 20):
                parts.append(part)
            return b"".join(parts)
        return self._read(n) if n else b""

    @abstractmethod
    def close(self) -> None:
        """Stop reading and release the source."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Command(_Stream):
    """A command's standard output as a binary read stream, with at most `limit` bytes and `seconds` spent
    waiting for them (None: no limit); past either the command is killed — its process group, so a shell's
    children too — and the read raises. At the end of the output a failed command raises OSError."""

    def __init__(self, proc: subprocess.Popen, *, limit: Optional[int], seconds: Optional[float],
                 errors: Any = None, group: bool = True):
        self.proc, self.limit, self.seconds = proc, limit, seconds
        self.errors, self.group = errors, group  # a file with the command's stderr (curl's message), or None
        self.got, self.waited = 0, 0.0
        self._fd = proc.stdout.fileno()
        self._eof = False

    @classmethod
    def start(cls, args: Any, *, shell: bool = False, limit: Optional[int] = None,
              seconds: Optional[float] = None) -> "_Command":
        errors = None if shell else tempfile.TemporaryFile()  # a pipe: command's messages stay on the terminal
        proc = subprocess.Popen(args, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors, start_new_session=True)
        return cls(proc, limit=limit, seconds=seconds, errors=errors)

    def _read(self, n: int) -> bytes:
        if self._eof:
            return b""
        n = _allowed(n, self.limit, self.got)
        if self.seconds is not None:
            # select, not a blocking read: a trickling server never completes a large read
            start = time.monotonic()
            left = self.seconds - self.waited
            ready = left > 0 and select.select([self._fd], [], [], left)[0]
            self.waited += time.monotonic() - start
            if not ready:
                self._kill()
                raise TooSlow(f"no complete reply within {self.seconds:g} s")
        data = os.read(self._fd, min(n, 1 << 20))
        if not data:
            self._eof = True
            self._check_exit()
            return b""
        self.got += len(data)
        if self.limit is not None and self.got > self.limit:
            self._kill()
            raise TooLarge(f"more than {self.limit:,} bytes")
        return data

    def _check_exit(self) -> None:
        try:
            status = self.proc.wait(timeout=CONNECT_SECONDS)
        except subprocess.TimeoutExpired:  # output closed but still running: done with it
            self._kill()
            return
        if status not in (0, 141):  # 141: a shell's command stopped by SIGPIPE (its reader left early)
            message = ""
            if self.errors is not None:
                self.errors.seek(0)
                lines = [line.strip() for line in self.errors.read(4096).decode(errors="replace").splitlines()]
                message = next((line for line in reversed(lines) if line), "")
            raise OSError(message or f"the command exited with status {status}")

    def _kill(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.group:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()

    def close(self) -> None:
        """Stop reading; a command still running is killed (closing early is no error)."""
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
            self._kill()
            if self.errors is not None:
                self.errors.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # garbage collection: nothing to report to
            pass

    def __repr__(self) -> str:
        return f"<command {self.proc.args!r}>"


class _Capped(_Stream):
    """A stream that raises TooLarge once more than `limit` bytes were read from it."""

    def __init__(self, stream: Any, limit: int):
        self.stream, self.limit, self.got = stream, limit, 0

    def _read(self, n: int) -> bytes:
        data = self.stream.read(_allowed(n, self.limit, self.got))
        self.got += len(data)
        if self.got > self.limit:
            raise TooLarge(f"more than {self.limit:,} bytes")
        return data

    def close(self) -> None:
        self.stream.close()


def open_location(location: str, *, limit: Optional[int] = None, seconds: Optional[float] = None) -> BinaryIO:
    """A binary stream of one file: a local file, a URL (curl, with connect and stall limits) or a pipe: command.
    More than `limit` bytes raise TooLarge; for a URL or command, more than `seconds` spent waiting for bytes
    raise TooSlow (the command is stopped). A failed command raises OSError at the end of its output; OSError
    also when it cannot start."""
    location = str(location)
    if location.startswith(_HTTP):
        return _Command.start([*_curl(limit), "--url", location], limit=limit, seconds=seconds)
    if location.startswith("pipe:"):
        return _Command.start(location[len("pipe:"):], shell=True, limit=limit, seconds=seconds)
    if is_remote(location):  # another scheme webdataset opens (gs://, hf://, ais://, ...): with the same limits
        import webdataset as wds
        from webdataset.gopen import Pipe

        stream = wds.gopen(location, "rb")
        if isinstance(stream, Pipe):
            return _Command(stream.proc, limit=limit, seconds=seconds, group=False)
    else:
        stream = open(local_folder(location), "rb")
    return _Capped(stream, limit) if limit is not None else stream


def read_bytes(location: str, limit: Optional[int] = None, seconds: Optional[float] = None) -> bytes:
    """The whole file at `location` (dataset.json): at most `limit` bytes (INFO_BYTES) within `seconds`
    (SMALL_SECONDS). Raises OSError naming the reason (TooLarge, TooSlow)."""
    limit = INFO_BYTES if limit is None else limit
    with open_location(location, limit=limit, seconds=SMALL_SECONDS if seconds is None else seconds) as stream:
        return stream.read()


def size_of(location: str) -> Optional[int]:
    """Bytes of the file at `location`: stat for local files, Content-Length of a HEAD request for HTTP(S) (within
    SMALL_SECONDS in all); None for commands, or a server that does not say. Raises OSError for a missing file
    (HTTP 404 included) or a reply that is no size."""
    location = str(location)
    if location.startswith(_HTTP) and "{}" not in location:
        with _Command.start([*_curl(), "--head", "--url", location], limit=HEADER_BYTES,
                            seconds=SMALL_SECONDS) as reply:
            headers = reply.read().decode("latin-1")
        length = None
        for line in headers.splitlines():
            name, _, value = line.partition(":")
            if line.startswith("HTTP/"):  # a redirect's headers come first: the last reply's count
                length = None
            elif name.strip().lower() == "content-length":
                length = value.strip()
        if length is not None and not re.fullmatch(r"[0-9]{1,18}", length):
            raise OSError(f"Content-Length {length[:40]!r} is not a byte count")
        return int(length) if length is not None else None
    if is_remote(location):
        return None
    return local_folder(location).stat().st_size


def runs_command(root: str) -> bool:
    """Whether reading `root` starts a program with words from `root` itself: a pipe: command, or a scheme
    webdataset hands to a command-line tool (gs://, hf://, s3 through ais, scp://, ...). Local folders, file://
    and http(s) (curl with quoted arguments, above) do not."""
    root = str(root).strip()
    if root.lower().startswith("pipe:"):
        return True
    scheme = urlparse(root).scheme.lower() if "://" in root else ""
    return scheme not in ("", "file", "http", "https")
