"""Progress bars that suit where the output goes: tqdm's bar on a terminal; in a log file or a pipe, a plain
line every LOG_INTERVAL seconds (and at the end) instead of one endless line of carriage returns."""
from __future__ import annotations

import sys

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines when the output is not a terminal


class LineProgress(plain_tqdm):
    """tqdm that prints whole lines: the same text as the bar, newline-terminated, never erased."""

    def clear(self, nolock: bool = False) -> None:  # nothing on screen to erase
        pass

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        # tqdm redraws at once by default: in a log that is one line per call (the trainer's every log_every)
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def display(self, msg=None, pos=None) -> bool:
        # close() passes pos=0 and ends the line itself
        self.fp.write((msg if msg is not None else str(self)) + ("" if pos == 0 else "\n"))
        self.fp.flush()
        return True


# tqdm.auto picks the notebook widget inside Jupyter (whose stderr is no terminal either)
_NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


def progress_bar(*args, leave: bool = True, disable: bool = False, **kwargs) -> plain_tqdm:
    """A tqdm bar on a terminal; elsewhere LineProgress, and nothing for transient bars (leave=False: a bar
    erased when done has nothing to say in a log)."""
    if sys.stderr.isatty() or _NOTEBOOK:
        return tqdm(*args, leave=leave, disable=disable, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    return LineProgress(*args, leave=leave, disable=disable or not leave, mininterval=LOG_INTERVAL, **kwargs)
