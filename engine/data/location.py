"""Where a dataset lives (`data.root`, `--data`): a local folder, or anything webdataset's `gopen` opens.

- a folder: `data/maps_64`, `~/data/maps_64`, `file:///data/maps_64`;
- HTTP(S): `https://host/datasets/maps_64` (files are `<root>/<name>`);
- a command: `pipe:aws s3 cp s3://bucket/maps_64/{} -` — `{}` stands for the file name, so any tool that writes a
  file to stdout serves a dataset (s3, gcs, hf://, ssh ...). `{}` works in URLs too.

HTTP(S) is read through curl, as webdataset does, but with a stall limit: a server that stops sending fails the
read within STALL_SECONDS instead of hanging a training run.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import BinaryIO, Optional
from urllib.parse import unquote, urlparse

STALL_SECONDS = 30  # curl gives up when less than 1 byte/s arrives for this long
CONNECT_SECONDS = 10
_HTTP = ("http://", "https://")


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
    """The location of file `name` of the dataset at `root`."""
    root = str(root)
    if "{}" in root:
        return root.replace("{}", name)
    if is_remote(root):
        return f"{root.rstrip('/')}/{name}"
    return str(local_folder(root) / name)


def open_location(location: str) -> BinaryIO:
    """A binary stream of one file: a local file, a URL (curl, with connect and stall limits) or a pipe: command
    (webdataset's Pipe: a failed command raises OSError when read). Raises OSError when it cannot start."""
    import webdataset as wds

    location = str(location)
    if location.startswith(_HTTP):
        location = (f"pipe:curl -f -s -L --connect-timeout {CONNECT_SECONDS} --speed-limit 1 "
                    f"--speed-time {STALL_SECONDS} {shlex.quote(location)}")
    elif not is_remote(location):
        location = str(local_folder(location))
    return wds.gopen(location, "rb")


def read_bytes(location: str) -> bytes:
    """The whole file at `location` (dataset.json). Raises OSError naming the reason."""
    stream = open_location(location)
    try:
        return stream.read()
    finally:
        stream.close()  # a command's exit status is checked here: a failed one raises OSError


def size_of(location: str) -> Optional[int]:
    """Bytes of the file at `location`: stat for local files, Content-Length of a HEAD request for HTTP(S);
    None for commands, or a server that does not say. Raises OSError for a missing file (HTTP 404 included)."""
    location = str(location)
    if location.startswith(_HTTP) and "{}" not in location:
        from urllib.request import Request, urlopen

        with urlopen(Request(location, method="HEAD"), timeout=CONNECT_SECONDS) as reply:  # noqa: S310 (http only)
            length = reply.headers.get("Content-Length")
        return int(length) if length is not None else None
    if is_remote(location):
        return None
    return local_folder(location).stat().st_size
