"""Problems for training and evaluation: the built-in arithmetic task, local files, and hub datasets."""

from rlpp.data.loader import apply_template, check_template, load_problems
from rlpp.data.problems import ProblemSet
from rlpp.data.readers import DataError, read_pairs
from rlpp.data.synthetic import ANSWER_CHARS, ARITHMETIC_CHARS, LEVELS, MAX_LEVEL, Level, make_arithmetic

__all__ = [
    "ANSWER_CHARS", "ARITHMETIC_CHARS", "LEVELS", "MAX_LEVEL", "DataError", "Level", "ProblemSet",
    "apply_template", "check_template", "load_problems", "make_arithmetic", "read_pairs",
]
