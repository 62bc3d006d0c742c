"""Exact tail probabilities of the binomial and hypergeometric distributions.

``together`` (Fisher's exact test) and ``trends`` (the conditional binomial test)
need a few thousand tails per answer. Each tail is summed term by term from its
boundary outwards, in the direction where terms only shrink, with each term got from
the one before by the distribution's ratio of successive probabilities: no special
functions, so the commands start without SciPy (whose statistics module takes
longer to import than the answers take to compute). The tests hold these against
SciPy's ``binomtest`` and ``fisher_exact``.

A tail near the middle of a distribution of counts in the millions takes thousands of
terms, so every tail of an answer is summed at once, a block of terms at a time, with
NumPy's running products and sums: each tail's terms are multiplied and added in the
same order as one at a time would, so the results are the same to the last bit
(while a hypergeometric ratio's products of two counts stay below 2^53, that is below
about 94 million sales in scope; beyond, within a unit or two in the last place).

A tail below the smallest double (about 1e-308) is 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_NEGLIGIBLE = 1e-13  # a term this small against the sum so far changes it by less than the tests allow
_BLOCK = 128  # terms per tail per step; most tails end within one block

# ratio(j, rows): P(X = j + step) / P(X = j) for the tails ``rows`` at their terms j.
Ratio = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _per_tail(formula: Callable, **parameters: Any) -> Ratio:
    """``formula`` as a block's ratio: each tail's row of terms j with that tail's own
    parameters (arrays of one row per tail; other values are shared by every tail)."""
    def ratio(j: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return formula(j, **{name: value[rows] if isinstance(value, np.ndarray) else value
                             for name, value in parameters.items()})
    return ratio


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _sum_tails(log_first: list[float], ratio: Ratio, start: np.ndarray, stop: np.ndarray, step: int,
               dtype=np.int64) -> list[float]:
    """For each tail i: log of sum_j P(X = j) for j = start[i], start[i] + step, ... up
    to stop[i], given log P(X = start[i]) and ``ratio``; terms shrink in that direction.
    A sum ends at the first term below ``_NEGLIGIBLE`` of the sum so far, or at stop[i].
    ``dtype``: how the j given to ``ratio`` are held (whole numbers while its products
    fit them)."""
    count = len(log_first)
    totals = np.ones(count)
    term = np.ones(count)
    done = np.zeros(count, dtype=bool)
    at = start.astype(dtype)
    left = np.abs(stop - start)  # terms still to add before stop
    offsets = np.arange(1, _BLOCK + 1, dtype=dtype)
    while not done.all():
        rows = np.flatnonzero(~done)
        js = at[rows, None] + step * (offsets[None, :] - 1)
        inside = offsets[None, :] <= left[rows, None]
        ratios = np.where(inside, ratio(js, rows), 0.0)  # past stop: terms of 0 end the sum
        # Running products from each tail's last term, running sums from its last total,
        # left to right: the same operations, in the same order, as one term at a time.
        terms = np.multiply.accumulate(np.concatenate((term[rows, None], ratios), axis=1), axis=1)[:, 1:]
        sums = np.add.accumulate(np.concatenate((totals[rows, None], terms), axis=1), axis=1)[:, 1:]
        small = terms < _NEGLIGIBLE * sums
        hit = small.any(axis=1)
        # A tail ends at its first negligible term, or at its stop (past which the
        # terms are 0, so the last sum of the block is the sum at the stop).
        last = np.where(hit, small.argmax(axis=1), _BLOCK - 1)
        ended = hit | (left[rows] <= _BLOCK)
        finished = rows[ended]
        totals[finished] = sums[ended, last[ended]]
        done[finished] = True
        going = rows[~ended]
        term[going], totals[going] = terms[~ended, -1], sums[~ended, -1]
        at[going] += step * _BLOCK
        left[going] -= _BLOCK
    return [first + math.log(total) for first, total in zip(log_first, totals.tolist(), strict=True)]


def _exp(log_value: float) -> float:
    return math.exp(log_value) if log_value > -745 else 0.0


def binomial_two_sided(successes: int, trials: int, p: float) -> float:
    """Twice the smaller of P(X <= successes) and P(X >= successes), at most 1, for X
    binomial (trials, p) with 0 < p < 1."""
    return binomial_two_sided_many([successes], [trials], p)[0]


def binomial_two_sided_many(successes: Sequence[int], trials: Sequence[int], p: float) -> list[float]:
    """``binomial_two_sided`` for each (successes[i], trials[i]), at the same p."""
    out = [1.0] * len(successes)
    if not any(trials):
        return out
    # From c outwards, away from the mean, the terms only shrink: upwards above it,
    # downwards below it.
    log_q, log_p, odds = math.log1p(-p), math.log(p), p / (1 - p)
    upper, lower = [], []
    for i, (c, n) in enumerate(zip(successes, trials, strict=True)):
        if n:
            (upper if c >= n * p else lower).append((i, c, n, _log_choose(n, c) + c * log_p + (n - c) * log_q))
    for side, step in ((upper, 1), (lower, -1)):
        if not side:
            continue
        index, c, n, log_at = (list(column) for column in zip(*side, strict=True))
        cs, ns = np.array(c, dtype=np.int64), np.array(n, dtype=np.int64)
        if step == 1:  # P(X >= c)
            tails = _sum_tails(log_at, _per_tail(_binomial_up, n=ns[:, None], odds=odds), cs, ns, 1)
        else:  # P(X <= c)
            tails = _sum_tails(log_at, _per_tail(_binomial_down, n=ns[:, None], odds=odds), cs, np.zeros_like(cs),
                               -1)
        for i, tail, at in zip(index, tails, log_at, strict=True):
            # The other tail holds the rest and the point itself: at least about a half.
            other = 1.0 - _exp(tail) + _exp(at)
            out[i] = min(1.0, 2 * min(_exp(tail), other))
    return out


def hypergeometric_upper(at_least: int, population: int, marked: int, drawn: int) -> float:
    """P(X >= at_least) for X the marked items among ``drawn`` taken from ``population``
    holding ``marked`` (Fisher's exact test, one-sided: more together than chance)."""
    return hypergeometric_upper_many([at_least], population, [marked], [drawn])[0]


def hypergeometric_upper_many(at_least: Sequence[int], population: int, marked: Sequence[int],
                              drawn: Sequence[int]) -> list[float]:
    """``hypergeometric_upper`` for each (at_least[i], marked[i], drawn[i]) of one population."""
    big_n = population
    out = [0.0] * len(at_least)
    upper, lower = [], []
    for i, (k, big_k, n) in enumerate(zip(at_least, marked, drawn, strict=True)):
        low, high = max(0, n + big_k - big_n), min(big_k, n)
        if k <= low:
            out[i] = 1.0
        elif k <= high:
            # Above the mean, upwards from k; below it the upper tail is most of the
            # mass: 1 less the lower tail, summed downwards from k - 1.
            rest = big_n - big_k - n
            if k >= n * big_k / big_n:
                first = _log_point(k, big_n, big_k, n)
                if _sum_below(first, _hypergeometric_up(k, big_k, n, rest), _UNDERFLOW):
                    continue  # 0.0, as the sum would give
                upper.append((i, k, high, big_k, n, first))
            else:
                first = _log_point(k - 1, big_n, big_k, n)
                if _sum_below(first, _hypergeometric_down(k - 1, big_k, n, rest), _BESIDE_ONE):
                    out[i] = 1.0  # 1 less a sum too small to move it, as the sum would give
                    continue
                lower.append((i, k - 1, low, big_k, n, first))
    # Products of two counts fit 64-bit whole numbers below 2³¹ sales (and are held
    # exactly below 2^53, as Python's integers hold them); beyond 2³¹, they are taken
    # in floating point.
    dtype = np.int64 if big_n < 2**31 else np.float64
    for side, step in ((upper, 1), (lower, -1)):
        if not side:
            continue
        index, start, stop, big_ks, ns, log_first = (list(column) for column in zip(*side, strict=True))
        ks, n_ = np.array(big_ks, dtype=dtype)[:, None], np.array(ns, dtype=dtype)[:, None]
        ratio = _per_tail(_hypergeometric_up if step == 1 else _hypergeometric_down, big_k=ks, n=n_,
                          rest=big_n - ks - n_)
        tails = _sum_tails(log_first, ratio, np.array(start, dtype=np.int64), np.array(stop, dtype=np.int64),
                           step, dtype)
        for i, tail in zip(index, tails, strict=True):
            out[i] = min(1.0, _exp(tail)) if step == 1 else min(1.0, max(0.0, 1.0 - _exp(tail)))
    return out


# The ratios of successive terms at j: of whole numbers (exact, as Python divides them)
# or of a block's arrays (``_per_tail``).

def _binomial_up(j, n, odds):
    return (n - j) / (j + 1) * odds  # P(X = j + 1) / P(X = j)


def _binomial_down(j, n, odds):
    return j / (n - j + 1) / odds  # P(X = j - 1) / P(X = j)


def _hypergeometric_up(j, big_k, n, rest):
    # P(X = j + 1) / P(X = j) = (K - j)(n - j) / ((j + 1)(N - K - n + j + 1))
    return (big_k - j) * (n - j) / ((j + 1) * (rest + j + 1))


def _hypergeometric_down(j, big_k, n, rest):
    # P(X = j - 1) / P(X = j) = j (N - K - n + j) / ((K - j + 1)(n - j + 1))
    return j * (rest + j) / ((big_k - j + 1) * (n - j + 1))


# Far out in a tail the sum need not be taken: ``_exp`` of a log below ``_UNDERFLOW`` is
# 0.0, and 1.0 less a number below e^_BESIDE_ONE (< 2^-54) is 1.0 in floating point.
_UNDERFLOW, _BESIDE_ONE = -746.0, -40.0


def _sum_below(log_first: float, first_ratio: float, limit: float) -> bool:
    """Whether a tail whose terms shrink from P = e^log_first by ratios of at most
    ``first_ratio`` (the ratio of a log-concave distribution's successive terms only
    falls moving away from its middle) sums to less than e^limit: the geometric bound
    P / (1 - ratio), with a margin for rounding."""
    return first_ratio < 1 and log_first - math.log1p(-first_ratio) < limit - 1


def _log_point(j: int, big_n: int, big_k: int, n: int) -> float:
    return _log_choose(big_k, j) + _log_choose(big_n - big_k, n - j) - _log_choose(big_n, n)
