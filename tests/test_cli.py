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


import pytest  # noqa: E402


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": 5, "answer": "3"}\nnot json\n')
    (tmp_path / "brokenplugin.py").write_text("x = 1 / 0\ndef reward(c, a):\n    return 1.0\n")
    return tmp_path


@pytest.mark.parametrize("args, kind, says", [
    (["rollout.group_size=1"], "config", "rollout.group_size must be >= 2, got 1"),
    (["buffer.sampler=paper", "buffer.retest.mode=off", "buffer.retest.per_round=32"], "config",
     "the paper sampler always retests periodically, whatever buffer.retest.mode='off' says"),
    (["data.source=dataset", "data.path={d}/bad.jsonl"], "data",
     "bad.jsonl: 2 of 3 rows are malformed: line 2: prompt field 'prompt' is a number (5); expected text; "
     "line 3: invalid JSON"),
    (["trainer.resume={d}/nothing"], "checkpoint", "trainer.resume="),
    (["reward.name=no_such_module:fn"], "reward", "no module named 'no_such_module'"),
    (["reward.name=brokenplugin:reward"], "reward", "loading it failed: ZeroDivisionError: division by zero"),
    (["model.source=pretrained", "model.path={d}/no_model"], "model", "model.path "),
    (["model.source=pretrained", "model.path=pkg:no-such-dist/m.gguf"], "model", "'no-such-dist' is not installed"),
])
def test_user_errors_are_one_line_exit_2_no_traceback(bad_inputs, args, kind, says):
    """What a user sees for each bad input: `rlpp train: <kind> error: ...` naming the file, row or key."""
    args = [a.format(d=bad_inputs) for a in args]
    proc = subprocess.run([sys.executable, "-m", "rlpp.cli", "train", *args, "log.progress_bar=false",
                           f"trainer.output_dir={bad_inputs}/run"], capture_output=True, text=True, timeout=300,
                          cwd=bad_inputs, env={**__import__("os").environ, "PYTHONPATH": str(bad_inputs)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rlpp train: {kind} error: ") and says in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    if kind in ("reward", "checkpoint") or "pkg:" in " ".join(args):  # checked before Ray starts: seconds, not 15
        assert "Started a local Ray instance" not in proc.stderr


def test_debug_shows_the_traceback(bad_inputs, capsys):
    assert main(["--debug", "train", "rollout.group_size=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("rlpp train: config error:")
    assert main(["plot", str(bad_inputs / "nowhere")]) == 2
    assert "rlpp plot: run error: " in capsys.readouterr().err


def test_yaml_words_off_on_stay_text_for_text_settings(tmp_path):
    """YAML 1.1 read `mode: off` as a boolean, which became the string 'False'."""
    from rlpp.config.loader import load_config

    (tmp_path / "c.yaml").write_text("buffer:\n  retest: {mode: off}\nlog:\n  tensorboard: off\n")
    cfg = load_config(tmp_path / "c.yaml", ["trainer.eval_dev=yes"])
    assert cfg.buffer.retest.mode == "off" and cfg.log.tensorboard is False and cfg.trainer.eval_dev is True


def test_progress_is_lines_when_stderr_is_not_a_terminal():
    import io

    from rlpp.progress import Progress

    stream = io.StringIO()
    progress = Progress(total=5, enabled=True, stream=stream, interval_s=3600)
    for step in range(1, 6):
        progress.update(step, accuracy=0.25, pass_rate=0.5, rollouts=64 * step)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()  # the first and the last step; no bar redraws
    assert lines[-1].startswith("rlpp train: step 5/5 | held-out acc 0.250 | pass rate 0.50 |")
    assert "rollouts/s | ETA" in lines[-1]
    quiet = io.StringIO()
    Progress(total=5, enabled=False, stream=quiet).update(1, accuracy=0, pass_rate=0, rollouts=1)
    assert quiet.getvalue() == ""
