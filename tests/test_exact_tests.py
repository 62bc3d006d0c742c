"""The exact tails behind `together` and `trends` against SciPy's, over counts from a
handful to millions, in both tails and far out in them."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest, hypergeom

from cafe_etl.analytics.exact_tests import binomial_two_sided, hypergeometric_upper

RNG = random.Random(20261207)


def _binomial_cases(count: int) -> list[tuple[int, int, float]]:
    cases = [(0, 0, 0.2), (0, 10, 0.2), (10, 10, 0.2), (2, 10, 0.2), (1, 1, 0.5)]
    while len(cases) < count:
        n = RNG.choice([1, 7, 40, 300, 5000, 90000])
        p = RNG.choice([0.2, 0.25, 1 / 3, 0.5])
        spread = math.sqrt(n * p * (1 - p)) * RNG.choice([0.3, 1, 3, 10, 40])
        cases.append((min(n, max(0, round(RNG.gauss(n * p, spread)))), n, p))
    return cases


@pytest.mark.parametrize("successes, trials, p", _binomial_cases(120))
def test_binomial_two_sided_matches_scipy(successes, trials, p):
    if trials == 0:
        assert binomial_two_sided(successes, trials, p) == 1.0
        return
    lower = binomtest(successes, trials, p, alternative="less").pvalue
    upper = binomtest(successes, trials, p, alternative="greater").pvalue
    assert binomial_two_sided(successes, trials, p) == pytest.approx(min(1.0, 2 * min(lower, upper)),
                                                                    rel=1e-7, abs=1e-300)


def _hypergeometric_cases(count: int) -> list[tuple[int, int, int, int]]:
    cases = [(0, 10, 3, 4), (5, 10, 3, 4), (3, 10, 3, 4), (1, 1, 1, 1), (7, 100, 10, 20)]
    while len(cases) < count:
        population = RNG.choice([20, 500, 40000, 2_000_000])
        marked, drawn = RNG.randint(1, population // 2), RNG.randint(1, population // 2)
        mean = drawn * marked / population
        cases.append((max(0, round(RNG.gauss(mean, math.sqrt(mean + 1) * RNG.choice([0.5, 2, 6, 30])))),
                      population, marked, drawn))
    return cases


@pytest.mark.parametrize("at_least, population, marked, drawn", _hypergeometric_cases(120))
def test_hypergeometric_upper_tail_matches_scipy(at_least, population, marked, drawn):
    want = float(hypergeom.sf(at_least - 1, population, marked, drawn))
    assert hypergeometric_upper(at_least, population, marked, drawn) == pytest.approx(want, rel=1e-6, abs=1e-300)
