"""How a run stops: signals (finish the step and checkpoint; a second one exits at once) and the process exit."""
from __future__ import annotations

import logging
import os
import signal
import sys

import torch


class StopFlag:
    """SIGTERM/SIGINT: finish the current step, checkpoint, exit non-zero. A second signal exits at once (a step
    that never ends, a checkpoint write that hangs): the newest complete checkpoint stays as it was."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, signum, _frame):
        name = signal.Signals(signum).name
        if self.signal is not None:
            _say(f"second {name}: exiting now; the newest complete checkpoint is kept (resume: the same command "
                 "plus --resume)")
            os._exit(128 + signum)
        _say(f"{name}: stopping after this step (a second {name} exits at once)")
        self.signal = signum

    def agreed(self, accelerator, sync_point: bool) -> bool:
        """All ranks stop at the same step: any rank's signal stops everyone. One process stops after the step
        it was signalled in; several agree (a collective and a host sync) only at `sync_point` steps (those where
        the trainer logs or writes anything), so they stop at the next one."""
        if accelerator.num_processes == 1:
            return self.signal is not None
        if not sync_point:
            return False
        flag = torch.tensor(float(self.signal is not None), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum") > 0)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "a signal on another rank"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or signal.SIGTERM)


def _say(line: str) -> None:
    os.write(2, f"\n{line}\n".encode())  # not print(): a handler may interrupt a print on the same stream


def end_run(accelerator, code: int, lock=None) -> int:
    """Ends the run on every rank: trackers finished, the run lock released, exit code `code`.

    DDP keeps its gloo process group alive past `destroy_process_group` (torch leaks it), and the group's
    threads can abort the interpreter's teardown: SIGABRT, "terminate called without an active exception",
    after the run has written everything. A worker of a multi-process run therefore leaves without it.
    """
    several = accelerator.num_processes > 1
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if lock is not None:
        lock.release()
    if several:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
