"""Rewards loaded by ``module:function`` in the tests (importable as ``reward_plugins``: pytest puts this
folder on sys.path)."""

from __future__ import annotations

import threading
import time

NOT_CALLABLE = 3
RELEASE = threading.Event()


def half(completion: str, answer: str) -> float:
    return 0.5


def scripted(completion: str, answer: str) -> object:
    """Behaves as the completion says: ``hang``, ``raise``, ``nan``, ``inf``, ``text``, ``none``,
    ``block`` (until RELEASE is set), ``sleep:<seconds>``; else 1.0 iff it equals the answer."""
    if completion == "hang":
        time.sleep(30)
    if completion == "raise":
        raise RuntimeError("scripted failure")
    if completion == "block":
        RELEASE.wait()
    if completion.startswith("sleep:"):
        time.sleep(float(completion[len("sleep:"):]))
        return 1.0
    special = {"nan": float("nan"), "inf": float("inf"), "text": "1.0", "none": None}
    if completion in special:
        return special[completion]
    return float(completion == answer)
