"""A reward module that imports in the test process but fails to import in a reward worker started while
``RLPP_TEST_BREAK_REWARD_WORKER`` is set (the scorer's workers inherit the environment)."""

import os

if os.environ.get("RLPP_TEST_BREAK_REWARD_WORKER"):
    raise ImportError("broken on purpose in the reward worker")


def reward(completion: str, answer: str) -> float:
    return 1.0
