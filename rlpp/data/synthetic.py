"""The built-in arithmetic task: ``+ - *`` problems at difficulty levels 0..8, e.g. ``"12+7="`` -> ``"19"``.

Levels, in increasing difficulty for a ~0.6M-parameter character-level transformer trained briefly
("1d" means an operand of exactly one digit, 0..9; "2d" 10..99; "3d" 100..999):

    level  problem   distinct problems  example        role
    0      1d + 1d             100      3+5=8          trivial: the warm model always solves it
    1      1d - 1d             100      3-5=-2         trivial (a sign to get right)
    2      2d + 1d             900      47+8=55        easy
    3      1d * 1d             100      7*8=56         easy (a table to memorise)
    4      2d + 2d           8,100      47+38=85       middle
    5      2d - 2d           8,100      38-47=-9       middle
    6      2d * 1d             900      47*8=376       hard
    7      3d + 3d         810,000      473+838=1311   hard
    8      2d * 2d           8,100      47*38=1786     out of reach

Levels are disjoint by construction (operand widths differ), and prompts use only ``ARITHMETIC_CHARS``;
the longest prompt + answer is 12 characters.

Counts per level. The ``num_train + num_dev + num_eval`` problems are spread evenly over levels
``0..max_level``; a level with fewer distinct problems than its share (levels 0, 1 and 3 hold 100)
gives all it has, and its shortfall is spread evenly over the levels that have room ("water filling").
With the defaults (2000 + 300 + 500 over 9 levels) levels 0, 1, 3 give 100 problems each and the other
six about 417. A request larger than all levels together raises ``ValueError``.

Splits. Problems are drawn without replacement, so no string occurs twice anywhere; each level's
problems are then dealt to train/dev/eval in proportion to the split sizes (stratified, so every
split has the same level mix up to rounding), and each split is shuffled. Everything follows from
``seed`` through one ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlpp.data.problems import ProblemSet

__all__ = ["ARITHMETIC_CHARS", "ANSWER_CHARS", "LEVELS", "MAX_LEVEL", "Level", "make_arithmetic"]

ARITHMETIC_CHARS = "0123456789+-*="
"""Every character a prompt or answer of the arithmetic task may contain."""
ANSWER_CHARS = "0123456789-"
"""Every character an answer may contain."""


@dataclass(frozen=True)
class Level:
    """One difficulty level: ``a op b`` with ``a`` and ``b`` drawn from fixed digit widths."""

    op: str
    a_digits: int
    b_digits: int

    @property
    def name(self) -> str:
        return f"{self.a_digits}d{self.op}{self.b_digits}d"

    @property
    def size(self) -> int:
        """How many distinct problems the level holds."""
        return _width(self.a_digits) * _width(self.b_digits)

    def problem(self, index: int) -> tuple[str, str]:
        """Problem number ``index`` (0 <= index < size) as (prompt, answer)."""
        a_lo, b_lo = _lowest(self.a_digits), _lowest(self.b_digits)
        a, b = divmod(int(index), _width(self.b_digits))
        a, b = a + a_lo, b + b_lo
        value = a + b if self.op == "+" else a - b if self.op == "-" else a * b
        return f"{a}{self.op}{b}=", str(value)


def _lowest(digits: int) -> int:
    return 0 if digits == 1 else 10 ** (digits - 1)


def _width(digits: int) -> int:
    return 10 ** digits - _lowest(digits)


LEVELS: tuple[Level, ...] = (
    Level("+", 1, 1), Level("-", 1, 1), Level("+", 2, 1), Level("*", 1, 1), Level("+", 2, 2),
    Level("-", 2, 2), Level("*", 2, 1), Level("+", 3, 3), Level("*", 2, 2),
)
"""Level ``i`` is ``LEVELS[i]``; see the module docstring for the table."""
MAX_LEVEL = len(LEVELS) - 1


def make_arithmetic(num_train: int, num_dev: int, num_eval: int, max_level: int = MAX_LEVEL,
                    seed: int = 0, level_weights: Sequence[float] = ()) -> tuple[ProblemSet, ProblemSet, ProblemSet]:
    """Draw disjoint (train, dev, eval) arithmetic problem sets over levels ``0..max_level``.

    ``level_weights`` (one per level ``0..max_level``; empty: even) gives each level a share of the
    problems in proportion to its weight, with the same water filling for levels that run out. Deterministic
    for a seed. Raises ValueError when the levels hold fewer distinct problems than requested in total.
    """
    sizes = (num_train, num_dev, num_eval)
    if min(sizes) < 0 or sum(sizes) < 1:
        raise ValueError(f"split sizes must be >= 0 with a positive total, got train/dev/eval {sizes}")
    if not 0 <= max_level <= MAX_LEVEL:
        raise ValueError(f"max_level must be in [0, {MAX_LEVEL}], got {max_level}")
    levels = LEVELS[: max_level + 1]
    weights = [float(w) for w in level_weights]
    if weights and (len(weights) != len(levels) or min(weights) < 0 or not sum(weights) > 0):
        raise ValueError(f"level_weights must hold {len(levels)} weights >= 0 (levels 0..{max_level}) with a "
                         f"positive sum, got {list(level_weights)}")
    total = sum(sizes)
    capacity = sum(lv.size for lv, w in zip(levels, weights or [1.0] * len(levels)) if w > 0)
    if total > capacity:
        raise ValueError(f"the arithmetic task with max_level={max_level} holds {capacity} distinct problems, "
                         f"but num_train + num_dev + num_eval = {total}; ask for fewer or raise max_level")

    rng = np.random.default_rng(seed)
    prompts: list[str] = []
    answers: list[str] = []
    labels: list[int] = []
    caps = [lv.size for lv in levels]
    counts = _spread_weighted(total, caps, weights) if weights else _spread(total, caps)
    for level, (lv, count) in enumerate(zip(levels, counts)):
        for index in rng.choice(lv.size, size=count, replace=False):
            prompt, answer = lv.problem(index)
            prompts.append(prompt)
            answers.append(answer)
            labels.append(level)
    if len(set(prompts)) != len(prompts):
        raise AssertionError("arithmetic levels overlap; every prompt should be distinct by construction")

    # Problems are grouped by level here, so dealing them in order stratifies every split by level.
    split_of = _deal(sizes, total)
    level_arr = np.asarray(labels, dtype=np.int64)
    out = []
    for split, name in enumerate(("train", "dev", "eval")):
        ids = rng.permutation(np.flatnonzero(split_of == split))
        out.append(ProblemSet(prompts=[prompts[i] for i in ids], answers=[answers[i] for i in ids],
                              levels=level_arr[ids], source=f"arithmetic(seed={seed}):{name}"))
    return out[0], out[1], out[2]


def _spread(total: int, caps: list[int]) -> list[int]:
    """Split ``total`` as evenly as possible over bins of capacity ``caps`` (water filling).

    Full bins take all they hold; the rest differ by at most one, lower bins getting the extra ones.
    Assumes ``total <= sum(caps)``.
    """
    counts = [0] * len(caps)
    left = total
    while left:
        open_bins = [i for i, cap in enumerate(caps) if counts[i] < cap]
        share, extra = divmod(left, len(open_bins))
        for rank, i in enumerate(open_bins):
            take = min(share + (rank < extra), caps[i] - counts[i])
            counts[i] += take
            left -= take
    return counts


def _spread_weighted(total: int, caps: list[int], weights: list[float]) -> list[int]:
    """Split ``total`` over bins in proportion to ``weights``, capped by ``caps``: full bins take all they
    hold and their shortfall goes to the others, again in proportion (largest remainders get the extra
    ones, lower bins first on ties). Assumes ``total`` fits in the bins of positive weight."""
    counts = [0] * len(caps)
    left = total
    while left:
        open_bins = [i for i, cap in enumerate(caps) if counts[i] < cap and weights[i] > 0]
        mass = sum(weights[i] for i in open_bins)
        exact = {i: left * weights[i] / mass for i in open_bins}
        give = {i: int(exact[i]) for i in open_bins}
        extra = left - sum(give.values())
        for i in sorted(open_bins, key=lambda i: (-(exact[i] - give[i]), i))[:extra]:
            give[i] += 1
        for i in open_bins:
            take = min(give[i], caps[i] - counts[i])
            counts[i] += take
            left -= take
    return counts


def _deal(sizes: tuple[int, ...], total: int) -> np.ndarray:
    """Split labels for ``total`` positions, hitting ``sizes`` exactly and every prefix proportionally.

    Each position goes to the split furthest behind its quota (k+1)·size/total; every split's deficit
    stays within (-1, 1), so any run of consecutive positions is split in proportion up to rounding.
    """
    given = [0] * len(sizes)
    out = np.empty(total, dtype=np.int64)
    for k in range(total):
        # Integer arithmetic: deficit times total, so ties and the final counts are exact.
        split = max(range(len(sizes)), key=lambda s: ((k + 1) * sizes[s] - given[s] * total, -s))
        out[k] = split
        given[split] += 1
    if given != list(sizes):
        raise AssertionError(f"dealt {given} instead of {list(sizes)}")
    return out
