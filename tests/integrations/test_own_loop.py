"""The README's "Use the buffer in your own loop" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from tests.buffer.buffer_helpers import assert_state_equal

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Use the buffer in your own loop"


def readme_example() -> str:
    """The first python block after the section's heading, exactly as the README shows it."""
    text = README.read_text()
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    block = re.search(r"```python\n(.*?)```", text[text.index(HEADING):], re.S)
    assert block, "the section has no python example"
    return block.group(1)


def test_readme_own_loop_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example checkpoints to ./buffer.pkl
    ns: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), ns)
    buffer, restored = ns["buffer"], ns["restored"]
    assert buffer.counters["updates"] == 50 * 16, "every batch drawn was scored"
    assert buffer.stats()["buffer/solved"] > 0, "the prioritized sampler parked problems it always solves"
    buffer.check_invariants()
    restored.check_invariants()
    assert_state_equal(restored.state_dict(), buffer.state_dict())
