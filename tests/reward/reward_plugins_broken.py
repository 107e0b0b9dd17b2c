"""A reward module whose own dependency is missing: resolving it must show that error, not hide it."""

import rlpp_no_such_dependency  # noqa: F401


def reward(completion: str, answer: str) -> float:
    return 0.0
