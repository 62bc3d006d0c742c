"""Exact tail probabilities of the binomial and hypergeometric distributions.

``together`` (Fisher's exact test) and ``trends`` (the conditional binomial test)
need a few thousand tails per answer. Each tail is summed term by term from its
boundary outwards, in the direction where terms only shrink, with each term got from
the one before by the distribution's ratio of successive probabilities: no special
functions, so the commands start without SciPy (whose statistics module takes
longer to import than the answers take to compute). The tests hold these against
SciPy's ``binomtest`` and ``fisher_exact``.

A tail below the smallest double (about 1e-308) is 0.0.
"""

from __future__ import annotations

import math

_NEGLIGIBLE = 1e-13  # a term this small against the sum so far changes it by less than the tests allow


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _sum_terms(log_first: float, ratio, k: int, stop: int, step: int) -> float:
    """log of sum_{j} P(X = j) for j = k, k + step, ... up to ``stop``, given log P(X = k)
    and ``ratio(j)`` = P(X = j + step) / P(X = j); terms shrink in that direction."""
    total, term = 1.0, 1.0
    while k != stop:
        term *= ratio(k)
        k += step
        total += term
        if term < _NEGLIGIBLE * total:
            break
    return log_first + math.log(total)


def _exp(log_value: float) -> float:
    return math.exp(log_value) if log_value > -745 else 0.0


def binomial_two_sided(successes: int, trials: int, p: float) -> float:
    """Twice the smaller of P(X <= successes) and P(X >= successes), at most 1, for X
    binomial (trials, p) with 0 < p < 1."""
    c, n = successes, trials
    if n == 0:
        return 1.0
    log_q, log_p = math.log1p(-p), math.log(p)
    log_at = _log_choose(n, c) + c * log_p + (n - c) * log_q
    odds = p / (1 - p)
    # From c outwards, away from the mean, the terms only shrink.
    if c >= n * p:
        tail = _sum_terms(log_at, lambda j: (n - j) / (j + 1) * odds, c, n, 1)  # P(X >= c)
    else:
        tail = _sum_terms(log_at, lambda j: j / (n - j + 1) / odds, c, 0, -1)  # P(X <= c)
    # The other tail holds the rest and the point itself: at least about a half.
    other = 1.0 - _exp(tail) + _exp(log_at)
    return min(1.0, 2 * min(_exp(tail), other))


def hypergeometric_upper(at_least: int, population: int, marked: int, drawn: int) -> float:
    """P(X >= at_least) for X the marked items among ``drawn`` taken from ``population``
    holding ``marked`` (Fisher's exact test, one-sided: more together than chance)."""
    k, big_n, big_k, n = at_least, population, marked, drawn
    low, high = max(0, n + big_k - big_n), min(big_k, n)
    if k <= low:
        return 1.0
    if k > high:
        return 0.0
    rest = big_n - big_k - n  # the ratios below, with j for the term they start from
    if k >= n * big_k / big_n:
        # Upwards from k: P(X = j + 1) / P(X = j) = (K - j)(n - j) / ((j + 1)(N - K - n + j + 1)).
        total = term = 1.0
        j = k
        while j < high:
            term *= (big_k - j) * (n - j) / ((j + 1) * (rest + j + 1))
            j += 1
            total += term
            if term < _NEGLIGIBLE * total:
                break
        return min(1.0, _exp(_log_point(k, big_n, big_k, n) + math.log(total)))
    # Below the mean the upper tail is most of the mass: 1 less the lower tail, summed
    # downwards from k - 1: P(X = j - 1) / P(X = j) = j (N - K - n + j) / ((K - j + 1)(n - j + 1)).
    total = term = 1.0
    j = k - 1
    while j > low:
        term *= j * (rest + j) / ((big_k - j + 1) * (n - j + 1))
        j -= 1
        total += term
        if term < _NEGLIGIBLE * total:
            break
    return min(1.0, max(0.0, 1.0 - _exp(_log_point(k - 1, big_n, big_k, n) + math.log(total))))


def _log_point(j: int, big_n: int, big_k: int, n: int) -> float:
    return _log_choose(big_k, j) + _log_choose(big_n - big_k, n - j) - _log_choose(big_n, n)
