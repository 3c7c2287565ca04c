"""Noise margins for the chapters' claims (the book's rule, stated in the introduction).

A chapter asserts "A beats B" only when the difference is larger than ``Z`` standard errors
of that difference *in this run*. Two models evaluated on the same test images give a paired
difference: per image, ``correct_A − correct_B`` is −1, 0 or +1, and the standard error of
its mean is ``std / √n``. Images on which both models agree add no noise, so the paired margin
is much tighter than two independent binomial errors. A mean over several test sets (the
"OOD mean" of chapters 5–7) averages the per-set differences; their errors add in quadrature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: Standard errors a claimed difference must exceed: two (a one-sided false alarm of about 2 %
#: when the true difference is zero).
Z = 2.0


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` independent images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def paired_se(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Standard error of ``mean(a) − mean(b)`` over the same items (per-item scores, e.g. 0/1)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError("paired_se needs two equally long 1-d score vectors of at least two items")
    return float(d.std(ddof=1) / math.sqrt(len(d)))


@dataclass(frozen=True)
class Gap:
    """A measured difference and its standard error (both as fractions, e.g. accuracies)."""

    diff: float
    se: float

    @property
    def margin(self) -> float:
        """``Z`` standard errors: what ``diff`` must exceed for the chapter to call it real."""
        return Z * self.se

    def above(self, offset: float = 0.0) -> bool:
        """Whether the difference exceeds ``offset`` by more than the margin."""
        return self.diff - offset > self.margin

    def verdict(self, above: str, level: str, below: str) -> str:
        """Words for the gap: ``above`` / ``level`` (within the margin) / ``below`` zero."""
        return above if self.diff > self.margin else below if self.diff < -self.margin else level

    def points(self) -> str:
        """``"+3.1 ± 0.8"``: the difference and its margin, in percentage points."""
        return f"{100 * self.diff:+.1f} ± {100 * self.margin:.1f}"


def paired_gap(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], sets: Sequence[str]) -> Gap:
    """Mean over ``sets`` of per-set accuracy ``a − b``, from per-image scores on the same images.

    ``a`` and ``b`` map a test set's name to per-image scores (1 = correct), as
    :meth:`clipnotes.evaluate.EvalSets.correct` returns them.
    """
    if not sets:
        raise ValueError("paired_gap needs at least one test set")
    diffs = [float(np.mean(a[s]) - np.mean(b[s])) for s in sets]
    ses = [paired_se(a[s], b[s]) for s in sets]
    return Gap(float(np.mean(diffs)), math.sqrt(sum(se ** 2 for se in ses)) / len(sets))


def difference_of_gaps(first: Gap, second: Gap) -> Gap:
    """``first − second`` for gaps measured on different test images (errors in quadrature)."""
    return Gap(first.diff - second.diff, math.hypot(first.se, second.se))


def bootstrap_gap(metric: Callable[[np.ndarray], float], strata: Sequence[str] | np.ndarray, n_boot: int = 500,
                  seed: int = 0) -> Gap:
    """A difference that is not a mean (a range, a standard deviation over prompt formats),
    with a bootstrap standard error: ``metric(idx)`` computes it on the test items ``idx``;
    items are resampled with replacement within each stratum (a domain), ``n_boot`` times.
    """
    strata = np.asarray(strata)
    parts = [np.flatnonzero(strata == s) for s in dict.fromkeys(strata.tolist())]
    rng = np.random.default_rng(seed)
    boots = [metric(np.concatenate([rng.choice(p, len(p)) for p in parts])) for _ in range(n_boot)]
    return Gap(float(metric(np.arange(len(strata)))), float(np.std(boots, ddof=1)))


def mean_gap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Gap:
    """``mean(a) − mean(b)`` for two independent samples (different images): the errors of
    the two means in quadrature."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("mean_gap needs at least two values on each side")
    return Gap(float(a.mean() - b.mean()), math.hypot(a.std(ddof=1) / math.sqrt(len(a)), b.std(ddof=1) / math.sqrt(len(b))))
