"""The start-up clock: process age from the kernel's record, and the phases a run logs."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rlpp.metrics import StartupClock, process_age


def test_process_age_counts_from_the_spawn_of_the_process():
    code = "import time; time.sleep(0.6); from rlpp.metrics import process_age; print(process_age())"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    age = float(out)
    assert 0.6 <= age <= wall + 0.02  # the child's age when it printed, within the parent's wall time
    assert age > 0.5 * wall  # and not a clock that starts at the import (that would read ~0)


def test_startup_clock_phases_add_up_to_the_process_age():
    clock = StartupClock()
    time.sleep(0.05)
    clock.mark("a")
    clock.add({"a.inner": 0.01})  # a sub-phase: reported, not added again
    time.sleep(0.05)
    clock.mark("b")
    m = clock.metrics()
    assert m["startup/a_s"] == pytest.approx(0.05, abs=0.04) and m["startup/b_s"] == pytest.approx(0.05, abs=0.04)
    top = m["startup/process_s"] + m["startup/a_s"] + m["startup/b_s"]
    assert m["startup/total_s"] == pytest.approx(top, abs=1e-9) and m["startup/total_s"] <= process_age()
    assert "a.inner" not in clock.summary() and clock.summary().startswith("start-up: ")
