"""Model selection as in the paper: keep the weights with the best validation shared Recall@1
(X→Y + Y→X) among those whose exclusive codes retrieve no better than `exclusive_limit`, from
step `select_after` on."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class Selector:
    select_after: int
    exclusive_limit: float
    best_step: Optional[int] = None
    best_score: float = float("-inf")
    best_metrics: dict = field(default_factory=dict)

    @staticmethod
    def score(metrics: dict) -> float:
        return metrics["recall_at_1_x2y"] + metrics["recall_at_1_y2x"]

    def eligible(self, step: int, metrics: dict) -> bool:
        exclusive = max(metrics["exclusive_recall_at_1_x2y"], metrics["exclusive_recall_at_1_y2x"])
        return step >= self.select_after and exclusive <= self.exclusive_limit

    def update(self, step: int, metrics: dict) -> bool:
        """True when `metrics` at `step` is the new best (ties keep the earlier step)."""
        if not self.eligible(step, metrics) or self.score(metrics) <= self.best_score:
            return False
        self.best_step, self.best_score, self.best_metrics = step, self.score(metrics), dict(metrics)
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
