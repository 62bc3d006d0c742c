"""The exact tails behind `together` and `trends` against SciPy's, over counts from a
handful to millions, in both tails and far out in them."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest, hypergeom

from cafe_etl.analytics import exact_tests
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


def _one_term_at_a_time(log_first: float, ratio, k: int, stop: int, step: int) -> float:
    """The reference: each term from the one before, added to the sum one by one."""
    total = term = 1.0
    while k != stop:
        term *= ratio(k)
        k += step
        total += term
        if term < 1e-13 * total:
            break
    return log_first + math.log(total)


def _hypergeometric_one_by_one(k: int, big_n: int, big_k: int, n: int) -> float:
    low, high = max(0, n + big_k - big_n), min(big_k, n)
    if k <= low:
        return 1.0
    if k > high:
        return 0.0
    rest = big_n - big_k - n
    if k >= n * big_k / big_n:
        up = _one_term_at_a_time(exact_tests._log_point(k, big_n, big_k, n),
                                 lambda j: (big_k - j) * (n - j) / ((j + 1) * (rest + j + 1)), k, high, 1)
        return min(1.0, exact_tests._exp(up))
    down = _one_term_at_a_time(exact_tests._log_point(k - 1, big_n, big_k, n),
                               lambda j: j * (rest + j) / ((big_k - j + 1) * (n - j + 1)), k - 1, low, -1)
    return min(1.0, max(0.0, 1.0 - exact_tests._exp(down)))


@pytest.mark.parametrize("population", [20, 40000, 7_265_779, 90_000_000])
def test_many_tails_at_once_equal_one_term_at_a_time_to_the_last_bit(population):
    """Summed a block at a time for a whole answer, each tail is what adding its terms
    one by one gives: the same products and sums in the same order (not just close)."""
    rng = random.Random(population)
    cases = []
    for _ in range(400):
        marked, drawn = rng.randint(1, population // 2), rng.randint(1, population // 2)
        mean = drawn * marked / population
        cases.append((max(0, round(rng.gauss(mean, math.sqrt(mean + 1) * rng.choice([0.3, 1, 3, 10, 40])))),
                      marked, drawn))
    got = exact_tests.hypergeometric_upper_many([c[0] for c in cases], population, [c[1] for c in cases],
                                                [c[2] for c in cases])
    want = [_hypergeometric_one_by_one(k, population, marked, drawn) for k, marked, drawn in cases]
    assert got == want
    assert len({p for p in got if 0 < p < 1}) > 100  # long tails and short ones, not only 0 and 1


def _binomial_one_by_one(c: int, n: int, p: float) -> float:
    if n == 0:
        return 1.0
    log_at = exact_tests._log_choose(n, c) + c * math.log(p) + (n - c) * math.log1p(-p)
    odds = p / (1 - p)
    if c >= n * p:
        tail = _one_term_at_a_time(log_at, lambda j: (n - j) / (j + 1) * odds, c, n, 1)
    else:
        tail = _one_term_at_a_time(log_at, lambda j: j / (n - j + 1) / odds, c, 0, -1)
    other = 1.0 - exact_tests._exp(tail) + exact_tests._exp(log_at)
    return min(1.0, 2 * min(exact_tests._exp(tail), other))


def test_many_binomial_tails_equal_one_term_at_a_time_to_the_last_bit():
    cases = _binomial_cases(400)
    for p in {c[2] for c in cases}:
        chosen = [c for c in cases if c[2] == p]
        assert exact_tests.binomial_two_sided_many([c[0] for c in chosen], [c[1] for c in chosen], p) == [
            _binomial_one_by_one(*c) for c in chosen]


def test_no_trials_is_no_evidence_whatever_p():
    assert binomial_two_sided(0, 0, 0.0) == binomial_two_sided(0, 0, 1.0) == 1.0
    assert exact_tests.binomial_two_sided_many([], [], 0.0) == []
    assert exact_tests.hypergeometric_upper_many([], 10, [], []) == []
