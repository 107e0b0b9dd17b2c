"""benchmarks/trl_compare.py without running the arms: the rlpp command of each W-smol arm states the
workload, and the report pairs each arm with TRL at its own dtype, flags unequal work and keeps failures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "trl_compare.py"


def _module():
    spec = importlib.util.spec_from_file_location("trl_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_smol_rlpp_commands_state_the_workload(tmp_path):
    tc = _module()
    w = tc.WORKLOADS["smol"]
    pipelined = tc.rlpp_command(w, "rlpp_pipelined", "bfloat16", 5, tmp_path)
    assert "configs/smollm2-arith.yaml" in pipelined[4]
    for arg in ("trainer.mode=pipelined", "trainer.batch_size=8", "rollout.group_size=8", "rollout.max_new_tokens=64",
                "rollout.temperature=1.0", "learner.lr=1e-06", "algo.loss=grpo", "algo.drop_zero_variance=false",
                "model.dtype=bfloat16", "reward.name=final_number", "learner.torch_threads=1", "trainer.steps=5"):
        assert arg in pipelined, arg
    assert not any(a.startswith("rollout.engine=") for a in pipelined)  # the config's engine: vllm
    hf = tc.rlpp_command(w, "rlpp_hf", "float32", 5, tmp_path)
    assert "rollout.engine=hf" in hf and "trainer.mode=sync" in hf and "learner.torch_threads=2" in hf
    # the config the commands name loads with these overrides (keys and values valid)
    from rlpp.config.loader import load_config
    cfg = load_config(pipelined[4], pipelined[5:])
    assert cfg.rollout.engine == "vllm" and cfg.model.dtype == "bfloat16" and cfg.trainer.mode == "pipelined"


def test_report_pairs_dtypes_flags_unequal_work_and_keeps_failures():
    tc = _module()
    w = tc.WORKLOADS["smol"]
    run = lambda s, n: {"step_s": s, "tokens_per_s": 64 * n / s, "mean_length": n}  # noqa: E731
    res = {"rlpp_sync@float32": [run(6.0, 40.0), run(8.0, 40.0)], "trl@float32": [run(10.0, 42.0)],
           "rlpp_hf@float32": [run(9.0, 30.0)], "trl_vllm@float32": [{"error": "RuntimeError: no CUDA"}],
           "rlpp_sync@bfloat16": [run(3.0, 40.0)], "trl@bfloat16": [run(4.0, 40.0)]}
    text = "\n".join(tc.compare(w, res))
    assert "rlpp_sync        7.000 s/step  0.70x TRL" in text  # median of 6 and 8, against TRL fp32's 10
    assert "rlpp_sync        3.000 s/step  0.75x TRL" in text  # bf16 against TRL bf16, not fp32
    assert "UNEQUAL WORK: lengths differ by 29%" in text and text.count("UNEQUAL") == 1
    assert "trl_vllm         failed: RuntimeError: no CUDA" in text


def test_a_failed_child_is_reported_by_its_error_not_its_progress_bar():
    tc = _module()
    err = "Traceback (most recent call last):\n  File x\nValueError: vLLM needs CUDA here\n  0%|   | 0/4 [00:03<?, ?it/s]\n"
    assert tc._last_line(err) == "ValueError: vLLM needs CUDA here"
    assert tc._last_line("just a line\n") == "just a line" and tc._last_line("") == "(no output)"
