"""The chaos soak, short (200 steps): a pipelined run (max_staleness 2, 2 rollout actors, 2 reward workers) whose
rollout actors and reward workers are SIGKILLed at random and whose driver is SIGKILLed twice and resumed,
then checked: nothing lost, nothing doubled (benchmarks/chaos_soak.py; the ten-minute soak is its default)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from chaos_soak import soak  # noqa: E402


@pytest.mark.slow
def test_a_short_chaos_soak_loses_nothing(tmp_path):
    result = soak(tmp_path / "soak", minutes=0.5, seed=1)  # 200 steps: two driver kills, a few others
    assert result["kills"]["driver"] == 2
    assert result["kills"]["rollout actor"] + result["kills"]["reward worker"] >= 2
    failed = {k: c["detail"] for k, c in result["checks"].items() if not c["passed"]}
    assert not failed, failed
