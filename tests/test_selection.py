"""Model selection: the official exclusive rule (a count of hits), the fraction option, and select_after."""
from iiae.training.selection import Selector
import pytest

pytestmark = pytest.mark.integration  # trains or starts processes: not in `make test-unit`


def metrics(shared: float, exclusive_hits: int, n: int = 800) -> dict:
    return {"recall_at_1_x2y": shared, "recall_at_1_y2x": shared, "exclusive_recall_at_1_x2y": exclusive_hits / n,
            "exclusive_recall_at_1_y2x": 0.0, "n": n}


def test_official_rule_allows_one_exclusive_hit_per_direction():
    rule = Selector(select_after=100)  # exclusive_max_hits 1, no fraction
    assert rule.eligible(100, metrics(0.5, 1)) and not rule.eligible(100, metrics(0.5, 2))
    assert not rule.eligible(99, metrics(0.5, 0))  # too early
    assert not Selector(0).eligible(0, metrics(0.5, 2, n=10_000))  # a count, not 1 % of the split


def test_fraction_and_count_bounds_combine_or_switch_off():
    assert Selector(0, exclusive_limit=0.0005, exclusive_max_hits=None).eligible(0, metrics(0.5, 5, n=10_000))
    assert not Selector(0, exclusive_limit=0.0005, exclusive_max_hits=None).eligible(0, metrics(0.5, 6, n=10_000))
    assert not Selector(0, exclusive_limit=0.0005, exclusive_max_hits=1).eligible(0, metrics(0.5, 5, n=10_000))
    assert Selector(0, exclusive_limit=None, exclusive_max_hits=None).eligible(0, metrics(0.5, 800))


def test_update_keeps_the_best_eligible_point_and_the_earlier_of_ties():
    rule = Selector(0)
    assert rule.update(1, metrics(0.4, 0)) and not rule.update(2, metrics(0.9, 3)) and rule.update(3, metrics(0.6, 1))
    assert not rule.update(4, metrics(0.6, 0)) and rule.best_step == 3
