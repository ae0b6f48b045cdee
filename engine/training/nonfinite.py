"""A non-finite loss stops the run, watched without a host sync per step.

Each micro-batch folds the finiteness of its loss terms into two device tensors (`FiniteWatch.observe`: a few
tensor ops, nothing read back); `check` reads them (one sync) on the steps where the trainer logs or writes
anything, before it does, so no checkpoint, model or sample is ever written from a diverged run.
"""
from __future__ import annotations

from typing import Optional

import torch

from iiae.errors import UserError
from iiae.models.objective import TERMS


class TrainingDiverged(UserError):
    """A non-finite loss: the run stops before anything is written from the diverged weights. Its own exit code,
    so a scheduler or sweep can tell a diverged run (retry with other settings) from bad input (fix the call)."""

    exit_code = 3


class FiniteWatch:
    NAMES = ("total", *TERMS)

    def __init__(self):
        self.bad_step: Optional[torch.Tensor] = None  # first non-finite step (optimizer steps taken), -1: none
        self.bad_terms: Optional[torch.Tensor] = None  # which of NAMES were non-finite at that step

    def observe(self, step: int, values: torch.Tensor) -> None:
        """`values`: this micro-batch's total loss and TERMS, in the order of NAMES, as one tensor."""
        nonfinite = ~torch.isfinite(values)
        if self.bad_step is None:
            self.bad_step = torch.full((), -1, dtype=torch.long, device=values.device)
            self.bad_terms = torch.zeros_like(nonfinite)
        first = nonfinite.any() & (self.bad_step < 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_terms = torch.where(first, nonfinite, self.bad_terms)

    def check(self, accelerator, now: int) -> None:
        """Raise TrainingDiverged on every rank at once when any rank saw a non-finite loss."""
        if self.bad_step is None:
            return
        steps, terms = self.bad_step.reshape(1), self.bad_terms.reshape(1, -1)
        if accelerator.num_processes > 1:  # every rank stops together, or the healthy ones would hang
            steps, terms = accelerator.gather(steps), accelerator.gather(terms)
        steps = steps.tolist()
        bad = [(s, r) for r, s in enumerate(steps) if s >= 0]
        if not bad:
            return
        step, rank = min(bad)
        names = [n for n, b in zip(self.NAMES, terms[rank].tolist()) if b and n != "total"]
        raise TrainingDiverged(
            f"loss is not finite at step {step} (offending term: {', '.join(names) or 'total'}); stopped after "
            f"step {now} with nothing written since the last finite one: the last checkpoint is intact")
