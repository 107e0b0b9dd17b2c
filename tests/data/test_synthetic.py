"""The arithmetic task: deterministic, disjoint, correct, evenly spread over levels, within its alphabet."""

from __future__ import annotations

import pickle
import re
from collections import Counter

import numpy as np
import pytest

from rlpp.data import ANSWER_CHARS, ARITHMETIC_CHARS, LEVELS, ProblemSet, make_arithmetic

# The level table, written out independently of the module: (operator, digits of a, digits of b).
TABLE = [("+", 1, 1), ("-", 1, 1), ("+", 2, 1), ("*", 1, 1), ("+", 2, 2),
         ("-", 2, 2), ("*", 2, 1), ("+", 3, 3), ("*", 2, 2)]
SIZES = [100, 100, 900, 100, 8100, 8100, 900, 810_000, 8100]
PROBLEM = re.compile(r"^(\d+)([-+*])(\d+)=$")


def solve(prompt: str) -> tuple[int, tuple[str, int, int]]:
    """The answer and (operator, digit counts) of a prompt, by parsing it (no eval)."""
    m = PROBLEM.match(prompt)
    assert m, prompt
    a, op, b = m.groups()
    for operand in (a, b):
        assert operand == "0" or not operand.startswith("0"), prompt
    x, y = int(a), int(b)
    value = {"+": x + y, "-": x - y, "*": x * y}[op]
    return value, (op, len(a), len(b))


@pytest.fixture(scope="module")
def default_splits():
    return make_arithmetic(2000, 300, 500, max_level=8, seed=1234)


def test_counts_are_met_and_splits_are_disjoint(default_splits):
    train, dev, held_out = default_splits
    assert (len(train), len(dev), len(held_out)) == (2000, 300, 500)
    everything = train.prompts + dev.prompts + held_out.prompts
    assert len(set(everything)) == len(everything)


def test_deterministic_for_a_seed(default_splits):
    again = make_arithmetic(2000, 300, 500, max_level=8, seed=1234)
    for a, b in zip(default_splits, again):
        assert a.prompts == b.prompts and a.answers == b.answers
        assert np.array_equal(a.levels, b.levels)
    other = make_arithmetic(2000, 300, 500, max_level=8, seed=1235)
    assert other[0].prompts != default_splits[0].prompts


def test_answers_and_levels_are_right(default_splits):
    for split in default_splits:
        for prompt, answer, level in zip(split.prompts, split.answers, split.levels):
            value, shape = solve(prompt)
            assert answer == str(value), prompt
            assert TABLE[level] == shape, prompt
    assert [lv.size for lv in LEVELS] == SIZES
    answers = [a for s in default_splits for a in s.answers]
    assert any(a.startswith("-") for a in answers)


def test_alphabet_and_length(default_splits):
    assert ARITHMETIC_CHARS == "0123456789+-*=" and set(ANSWER_CHARS) <= set(ARITHMETIC_CHARS)
    for split in default_splits:
        for prompt, answer in zip(split.prompts, split.answers):
            assert set(prompt) <= set(ARITHMETIC_CHARS) and set(answer) <= set(ANSWER_CHARS)
    # + - * are monotone in each operand, so the longest text of a level sits at a corner of its ranges
    def span(digits):
        return (0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)

    longest = max(len(f"{x}{op}{y}=") + len(str(solve(f"{x}{op}{y}=")[0]))
                  for op, a, b in TABLE for x in span(a) for y in span(b))
    assert longest <= 64
    assert max(len(p) + len(a) for s in default_splits for p, a in zip(s.prompts, s.answers)) <= 12


def test_levels_spread_evenly_with_small_levels_full(default_splits):
    levels = np.concatenate([s.levels for s in default_splits])
    counts = np.bincount(levels, minlength=9)
    assert counts.sum() == 2800
    small = [i for i in range(9) if SIZES[i] < 2800 / 9]
    assert small == [0, 1, 3] and all(counts[i] == SIZES[i] for i in small)
    rest = np.delete(counts, small)
    assert rest.max() - rest.min() <= 1
    # stratified: every split holds each level in proportion to its size, up to rounding
    for split in default_splits:
        got = np.bincount(split.levels, minlength=9)
        assert np.all(np.abs(got - counts * len(split) / 2800) < 2)


def test_lower_max_level_and_an_exactly_full_level():
    train, dev, held_out = make_arithmetic(60, 20, 20, max_level=0, seed=3)
    prompts = set(train.prompts + dev.prompts + held_out.prompts)
    assert prompts == {f"{a}+{b}=" for a in range(10) for b in range(10)}
    train, _, _ = make_arithmetic(500, 10, 10, max_level=2, seed=3)
    assert set(train.levels.tolist()) == {0, 1, 2}


def test_too_many_problems_is_a_clear_error():
    with pytest.raises(ValueError, match=r"max_level=1 holds 200 distinct problems.*201"):
        make_arithmetic(200, 1, 0, max_level=1, seed=0)
    with pytest.raises(ValueError, match="max_level"):
        make_arithmetic(10, 1, 1, max_level=9, seed=0)


def test_problem_set_subset_and_pickle(default_splits):
    train = default_splits[0]
    part = train.subset([5, 2, 9])
    assert part.prompts == [train.prompts[i] for i in (5, 2, 9)]
    assert part.answers == [train.answers[i] for i in (5, 2, 9)]
    assert part.levels.tolist() == [int(train.levels[i]) for i in (5, 2, 9)]
    clone = pickle.loads(pickle.dumps(train))
    assert clone.prompts == train.prompts and np.array_equal(clone.levels, train.levels)
    assert len(ProblemSet(["1+1="], ["2"]).subset([])) == 0
    with pytest.raises(ValueError, match="answers"):
        ProblemSet(["1+1="], [])


def test_every_split_mixes_levels(default_splits):
    # shuffled: the first problems of a split are not all one level
    first = Counter(default_splits[0].levels[:50].tolist())
    assert len(first) >= 5


def test_level_weights_share_every_split_in_proportion_with_water_filling():
    w = [6, 6, 6, 6, 1, 1, 1, 1, 6]
    train, dev, held_out = make_arithmetic(2000, 300, 500, 8, seed=5, level_weights=w)
    counts = np.bincount(np.concatenate([train.levels, dev.levels, held_out.levels]), minlength=9)
    # levels 0, 1 and 3 hold 100 problems each and level 2 holds 900: full; the rest goes 6:1 to the others
    assert counts[[0, 1, 2, 3]].tolist() == [100, 100, 900, 100] and counts.sum() == 2800
    assert abs(counts[8] / counts[4] - 6) < 0.1 and max(counts[4:8]) - min(counts[4:8]) <= 2
    assert abs(np.bincount(train.levels, minlength=9)[8] / len(train) - counts[8] / 2800) < 0.01  # stratified
    assert len(set(train.prompts) | set(dev.prompts) | set(held_out.prompts)) == 2800


def test_zero_weight_levels_are_left_out_and_even_weights_change_nothing():
    train, _, _ = make_arithmetic(500, 50, 50, 8, seed=1, level_weights=[0, 0, 0, 0, 1, 1, 0, 0, 0])
    assert set(train.levels.tolist()) == {4, 5}
    even = make_arithmetic(300, 30, 30, 8, seed=2)
    same = make_arithmetic(300, 30, 30, 8, seed=2, level_weights=[1] * 9)
    assert [s.prompts for s in even] == [s.prompts for s in same]


@pytest.mark.parametrize("weights", [[1, 1], [-1] + [1] * 8, [0] * 9])
def test_bad_level_weights_are_refused(weights):
    with pytest.raises(ValueError, match="level_weights"):
        make_arithmetic(100, 10, 10, 8, seed=0, level_weights=weights)


def test_level_weights_that_leave_too_few_problems_are_refused():
    with pytest.raises(ValueError, match="holds 100 distinct problems"):
        make_arithmetic(100, 10, 10, 8, seed=0, level_weights=[1] + [0] * 8)
