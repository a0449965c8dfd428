"""What `python -m benchmarks.backends` concludes from its measurements (docs/backends.md): agreement,
speed ratio and the keep rule, on tiny made-up inputs. Nothing here measures a backend."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.backends import (
    BATCH,
    DECISION_IMAGES,
    KEEP_AGREEMENT,
    KEEP_SPEEDUP,
    Agreement,
    Speed,
    agreement,
    keep,
    speed,
)


def probabilities(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_agreement_counts_same_classes_and_the_largest_difference() -> None:
    reference = probabilities([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    candidate = reference.copy()
    candidate[1] = [0.6, 0.3, 0.1]  # class 1 -> 0
    candidate[3] = [0.45, 0.45, 0.1]  # same class (argmax takes the first), |dp| 0.05
    result = agreement(reference, candidate)
    assert (result.images, result.same_class) == (4, 3)
    assert result.fraction == pytest.approx(3 / 4)
    assert result.max_prob_diff == pytest.approx(float(np.abs(reference - candidate).max()))


def test_identical_outputs_agree_fully() -> None:
    reference = np.random.default_rng(0).dirichlet(np.ones(6), size=10).astype(np.float32)
    result = agreement(reference, reference.copy())
    assert result.fraction == 1.0
    assert result.max_prob_diff == 0.0


def test_agreement_refuses_outputs_of_different_images() -> None:
    with pytest.raises(ValueError, match=r"\[images, classes\]"):
        agreement(np.zeros((3, 6)), np.zeros((4, 6)))


def test_speed_is_the_median_of_paired_ratios_and_images_per_second_from_median_times() -> None:
    baseline = [0.10, 0.12, 0.30, 0.11, 0.10]  # one round slowed by other load
    candidate = [0.05, 0.06, 0.15, 0.055, 0.05]  # the same load fell on it in that round
    result = speed(candidate, baseline, batch=BATCH)
    assert result.ratio == pytest.approx(2.0)
    assert result.images_per_s == pytest.approx(BATCH / float(np.median(candidate)))
    assert result.baseline_images_per_s == pytest.approx(BATCH / float(np.median(baseline)))
    assert result.rounds == len(baseline)


def test_speed_needs_timings_from_the_same_rounds() -> None:
    with pytest.raises(ValueError, match="per round"):
        speed([0.1, 0.1], [0.1])
    with pytest.raises(ValueError, match="per round"):
        speed([], [])


@pytest.mark.parametrize(
    ("ratio", "fraction", "kept"),
    [
        (KEEP_SPEEDUP, KEEP_AGREEMENT, True),
        (KEEP_SPEEDUP * 2, 1.0, True),
        (KEEP_SPEEDUP * 0.99, 1.0, False),  # fast enough only with the rule rounded
        (KEEP_SPEEDUP * 2, KEEP_AGREEMENT - 0.001, False),  # fast, but changes too many classes
    ],
)
def test_keep_needs_both_the_speedup_and_the_agreement(ratio: float, fraction: float, kept: bool) -> None:
    images = DECISION_IMAGES
    measured = Speed(images_per_s=ratio * 100, baseline_images_per_s=100, ratio=ratio, rounds=10)
    agreed = Agreement(images=images, same_class=round(fraction * images), max_prob_diff=0.0)
    assert keep(measured, agreed) is kept


def test_keep_needs_enough_images_to_see_a_one_percent_disagreement() -> None:
    fast = Speed(images_per_s=KEEP_SPEEDUP * 200, baseline_images_per_s=100, ratio=KEEP_SPEEDUP * 2, rounds=3)
    few = DECISION_IMAGES // 10
    assert not keep(fast, Agreement(images=few, same_class=few, max_prob_diff=0.0))
