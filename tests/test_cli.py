"""The ``rlpp`` entry point: parses first, answers config errors with exit code 2 and the key path."""

from __future__ import annotations

import subprocess
import sys

from rlpp.cli import main


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "configs/buffer.yaml", "buffer.sampler=uniform"]) == 0
    out = capsys.readouterr().out
    assert "sampler: uniform" in out and "every_steps: 10" in out


def test_overrides_without_a_file(capsys):
    assert main(["config", "buffer.per.alpha=0.9"]) == 0
    assert "alpha: 0.9" in capsys.readouterr().out


def test_config_error_exit_code_and_message(capsys):
    assert main(["config", "configs/buffer.yaml", "buffer.retest.every_steps=0"]) == 2
    assert "buffer.retest.every_steps must be >= 1, got 0" in capsys.readouterr().err


def test_help_does_not_import_heavy_modules():
    code = "import sys; from rlpp.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "heavy = [m for m in ('torch', 'ray', 'omegaconf', 'vllm') if m in sys.modules]\nassert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
