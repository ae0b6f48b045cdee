"""Whether the Hugging Face Hub can be reached, found out with one connection attempt: offline, the Hub client
and `datasets` retry for tens of seconds to minutes before they give up."""
from __future__ import annotations

import socket
from urllib.parse import urlparse

CONNECT_SECONDS = 5


def check_hub_reachable() -> None:
    """Return when the Hub endpoint accepts a connection; ConnectionError (one line: why) otherwise."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    url = urlparse(constants.ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ConnectionError(f"{constants.ENDPOINT} unreachable ({err})") from None
