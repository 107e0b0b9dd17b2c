"""benchmarks/warm_pass_rates.py's report: a pretrained model (no warm start) formats, the levels' rows add up."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "warm_pass_rates.py"


def _module():
    spec = importlib.util.spec_from_file_location("warm_pass_rates", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(dev):
    return {"group_size": 2, "problems": 5, "warmstart_dev_accuracy": dev, "histogram": [1, 3, 1],
            "always_solved": 0.2, "never_solved": 0.2, "zero_variance": 0.4, "mean_pass_rate": 0.5,
            "by_level": {0: [0, 1, 1], 1: [1, 2, 0]}}


def test_format_histogram_pretrained_and_warm_started():
    fmt = _module().format_histogram
    text = fmt(_result(None))
    assert "pretrained, not warm-started" in text and "zero-variance 40.0%" in text
    assert "| all | 1 | 3 | 1 |" in text and "| 0 | 0 | 1 | 1 |" in text and "| 1 | 1 | 2 | 0 |" in text
    assert "warm dev accuracy 0.650" in fmt(_result(0.65))
